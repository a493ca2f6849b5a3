//! The opening handshake, driven over a non-blocking socket.
//!
//! We read the request head ourselves, parse it once with httparse, and hand
//! the parsed request to tungstenite (`create_response` validates it and
//! derives `Sec-WebSocket-Accept`; `write_response` renders the 101). We do
//! not use tungstenite's `MidHandshake` because on failure it consumes the
//! stream and returns only an error: no way to answer 400, 426 or 431, no way
//! to route a plain HTTP request, and no head-size limit below its 64 KiB
//! `AttackCheck`. Bytes that follow the head in the same read (a client that
//! sends its first frame without waiting for the 101) are kept and become the
//! WebSocket's first input, where tungstenite would reject them.
//!
//! A refused request gets a complete HTTP response; then we half-close and
//! read until the client closes (lingering close), so that the response is
//! not destroyed by a reset when unread request bytes remain.

use tungstenite::{
    handshake::server::{create_response, write_response, Request},
    http,
    protocol::{Role, WebSocketConfig},
    WebSocket,
};

use crate::{
    config::MAX_REQUEST_HEAD,
    http::{route, Response, Route, Routes},
    socket::Socket,
};

/// What the handshake may accept, from [`crate::Config`].
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// If not empty, the `Origin` values allowed to connect (others get 403).
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks.
    pub subprotocols: Vec<String>,
}

/// A plain (non-upgrade) HTTP request, routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRequest {
    pub route: Route,
    pub method: String,
    pub target: String,
}

/// Why a request was refused, for the log line and the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not valid HTTP, or an upgrade request tungstenite rejects.
    Malformed,
    /// An upgrade request on the metrics-only listener.
    NotUpgrade,
    /// `Sec-WebSocket-Version` other than 13.
    UnsupportedVersion,
    /// Request head over [`MAX_REQUEST_HEAD`], or too many header fields.
    HeadTooLarge,
    /// `Origin` not in the allowlist.
    OriginNotAllowed,
    /// `--max-connections` reached.
    TooManyConnections,
}

impl RefusalKind {
    pub const ALL: [RefusalKind; 6] = [
        RefusalKind::Malformed,
        RefusalKind::NotUpgrade,
        RefusalKind::UnsupportedVersion,
        RefusalKind::HeadTooLarge,
        RefusalKind::OriginNotAllowed,
        RefusalKind::TooManyConnections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Malformed => "malformed",
            RefusalKind::NotUpgrade => "not_upgrade",
            RefusalKind::UnsupportedVersion => "unsupported_version",
            RefusalKind::HeadTooLarge => "head_too_large",
            RefusalKind::OriginNotAllowed => "origin_not_allowed",
            RefusalKind::TooManyConnections => "too_many_connections",
        }
    }
}

/// A refused request: the response to send and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub response: Response,
}

impl Refusal {
    fn new(kind: RefusalKind, status: u16, reason: impl Into<String>) -> Self {
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

/// How a handshake ended without opening, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer closed before sending a complete request.
    PeerClosed,
    /// A socket error (reset, ...).
    Io,
    /// `--handshake-timeout` passed (slowloris).
    Timeout,
}

impl Failure {
    pub const ALL: [Failure; 3] = [Failure::PeerClosed, Failure::Io, Failure::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::PeerClosed => "peer_closed",
            Failure::Io => "io_error",
            Failure::Timeout => "timeout",
        }
    }
}

/// Where a handshake stands after [`Handshake::advance`].
#[derive(Debug)]
pub enum Progress {
    /// Waiting for the socket (for WRITABLE too if [`Socket::write_blocked`]).
    Pending,
    /// The request was just refused: count and log it, then call
    /// [`Handshake::advance`] again to deliver the response.
    Refused(Refusal),
    /// A plain HTTP request: answer it with [`Handshake::respond`].
    Request(PlainRequest),
    /// The 101 response is sent: call [`Handshake::into_websocket`].
    Upgraded,
    /// The handshake failed; drop the connection.
    Failed(Failure),
    /// A response was delivered and the peer has closed: drop the connection.
    Finished,
}

/// One connection's handshake in progress.
#[derive(Debug)]
pub struct Handshake {
    socket: Socket,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Reading the request head.
    ReadingHead { head: Vec<u8> },
    /// Writing the 101; then the WebSocket opens with `tail` as its first input.
    Accepting { response: Vec<u8>, written: usize, tail: Vec<u8> },
    /// A plain request was read; its response is being made by the caller.
    AwaitingResponse,
    /// Writing a final response (a refusal, or a page); then lingering.
    Responding { response: Vec<u8>, written: usize },
    /// Response written and our FIN sent: discarding input until the peer closes.
    Lingering,
}

/// Most header fields in a request head (Chrome sends about 15).
const MAX_HEADERS: usize = 64;
/// Input a lingering connection may send before we stop being polite.
const LINGER_LIMIT: usize = 256 << 10;

impl Handshake {
    /// A new connection, waiting for its request.
    pub fn new(socket: Socket) -> Self {
        Handshake { socket, phase: Phase::ReadingHead { head: Vec::new() } }
    }

    /// A connection refused before it sent anything (at the connection
    /// limit): it gets `refusal`'s response, then lingers.
    pub fn refuse_now(socket: Socket, refusal: &Refusal) -> Self {
        Handshake { socket, phase: Phase::Responding { response: refusal.response.to_bytes(), written: 0 } }
    }

    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    pub fn socket_mut(&mut self) -> &mut Socket {
        &mut self.socket
    }

    /// Whether the handshake is only delivering a final HTTP response (it
    /// does not count as a connection any more).
    pub fn is_responding(&self) -> bool {
        matches!(self.phase, Phase::AwaitingResponse | Phase::Responding { .. } | Phase::Lingering)
    }

    /// Sends `response` to a plain request, then closes.
    pub fn respond(&mut self, response: &Response) {
        self.phase = Phase::Responding { response: response.to_bytes(), written: 0 };
    }

    /// Does all the work the socket allows now. `routes` says which plain
    /// HTTP routes this connection's listener serves.
    pub fn advance(&mut self, policy: &Policy, routes: Routes) -> Progress {
        loop {
            let next = match &mut self.phase {
                Phase::ReadingHead { head } => match read_head(&mut self.socket, head, policy, routes) {
                    Ok(Some((consumed, Decision::Upgrade(response)))) => {
                        let tail = head.split_off(consumed);
                        Phase::Accepting { response, written: 0, tail }
                    }
                    Ok(Some((_, Decision::Refuse(refusal)))) => {
                        self.phase = Phase::Responding { response: refusal.response.to_bytes(), written: 0 };
                        return Progress::Refused(refusal);
                    }
                    Ok(Some((_, Decision::Plain(request)))) => {
                        self.phase = Phase::AwaitingResponse;
                        return Progress::Request(request);
                    }
                    Ok(None) => return Progress::Pending,
                    Err(HeadError::Closed) => return Progress::Failed(Failure::PeerClosed),
                    Err(HeadError::Io) => return Progress::Failed(Failure::Io),
                },
                Phase::Accepting { response, written, .. } => match write_all(&mut self.socket, response, written) {
                    Ok(true) => return Progress::Upgraded,
                    Ok(false) => return Progress::Pending,
                    Err(()) => return Progress::Failed(Failure::Io),
                },
                // The caller has not answered the request (yet): nothing to do.
                Phase::AwaitingResponse => return Progress::Pending,
                Phase::Responding { response, written } => match write_all(&mut self.socket, response, written) {
                    Ok(true) => {
                        // Our FIN follows the response. If the shutdown fails the
                        // peer has gone already; lingering finds out at once.
                        let _ = self.socket.shutdown_write();
                        Phase::Lingering
                    }
                    Ok(false) => return Progress::Pending,
                    Err(()) => return Progress::Finished,
                },
                Phase::Lingering => match self.socket.discard_input(LINGER_LIMIT) {
                    Ok(false) => return Progress::Pending,
                    Ok(true) | Err(_) => return Progress::Finished,
                },
            };
            self.phase = next;
        }
    }

    /// Turns the upgraded connection into a WebSocket; the bytes that followed
    /// the request head become its first input.
    pub fn into_websocket(self, config: WebSocketConfig) -> WebSocket<Socket> {
        let tail = match self.phase {
            Phase::Accepting { tail, .. } => tail,
            _ => Vec::new(),
        };
        WebSocket::from_partially_read(self.socket, tail, Role::Server, Some(config))
    }
}

enum HeadError {
    Closed,
    Io,
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
}

/// Reads until the request head is complete, then decides on it:
/// `Ok(Some((head length, decision)))`, or `Ok(None)` while the socket has
/// nothing more. httparse runs on each read until the head is complete
/// (once, for the usual single-segment request), and the decision is made
/// from that same parse.
fn read_head(
    socket: &mut Socket,
    head: &mut Vec<u8>,
    policy: &Policy,
    routes: Routes,
) -> Result<Option<(usize, Decision)>, HeadError> {
    use std::io::Read;
    let mut chunk = [0u8; 4096];
    loop {
        let n = match socket.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(_) => return Err(HeadError::Io),
        };
        head.extend_from_slice(&chunk[..n]);
        let too_large = || {
            Refusal::new(RefusalKind::HeadTooLarge, 431, format!("request head larger than {MAX_REQUEST_HEAD} bytes"))
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let refuse = Decision::Refuse;
        return Ok(Some(match request.parse(head) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_REQUEST_HEAD => (len, decide(&request, policy, routes)),
            Ok(httparse::Status::Complete(len)) => (len, refuse(too_large())),
            Ok(httparse::Status::Partial) if head.len() > MAX_REQUEST_HEAD => (head.len(), refuse(too_large())),
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::TooManyHeaders) => (head.len(), refuse(too_large())),
            Err(e) => {
                (head.len(), refuse(Refusal::new(RefusalKind::Malformed, 400, format!("malformed HTTP request: {e}"))))
            }
        }));
    }
}

/// Parses a complete request head and decides what to answer (what the
/// handshake does once the head is in; public for the benches). `None` if
/// the head is incomplete.
pub fn decide_head(head: &[u8], policy: &Policy, routes: Routes) -> Option<Decision> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => Some(decide(&request, policy, routes)),
        Ok(httparse::Status::Partial) => None,
        Err(e) => {
            Some(Decision::Refuse(Refusal::new(RefusalKind::Malformed, 400, format!("malformed HTTP request: {e}"))))
        }
    }
}

/// Decides what to answer to a complete, parsed request head.
fn decide(parsed: &httparse::Request<'_, '_>, policy: &Policy, routes: Routes) -> Decision {
    match decide_upgrade(parsed, policy, routes) {
        Ok(response) => Decision::Upgrade(response),
        Err(None) => {
            let method = parsed.method.unwrap_or("").to_string();
            let target = parsed.path.unwrap_or("/").to_string();
            Decision::Plain(PlainRequest { route: route(&method, &target, routes), method, target })
        }
        Err(Some(refusal)) => Decision::Refuse(refusal),
    }
}

/// The 101 response for an acceptable upgrade; `Err(None)` for a plain
/// (non-upgrade) request; `Err(Some(refusal))` for a bad one.
fn decide_upgrade(
    parsed: &httparse::Request<'_, '_>,
    policy: &Policy,
    routes: Routes,
) -> Result<Vec<u8>, Option<Refusal>> {
    let method = parsed.method.unwrap_or("");
    let path = parsed.path.unwrap_or("/");
    let header = |name: &str| parsed.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);

    if header("upgrade").is_none() {
        return Err(None);
    }
    if routes == Routes::MetricsOnly {
        return Err(Some(Refusal::new(
            RefusalKind::NotUpgrade,
            404,
            format!("{path}: this address serves /metrics and /stats only, not WebSocket"),
        )));
    }
    let refuse = |r: Refusal| Err(Some(r));
    if method != "GET" {
        return refuse(
            Refusal::new(RefusalKind::Malformed, 405, format!("a WebSocket upgrade must use GET, not {method}"))
                .with_header("Allow", "GET"),
        );
    }
    if let Some(version) = header("sec-websocket-version") {
        if version.trim_ascii() != b"13" {
            let shown = String::from_utf8_lossy(version).into_owned();
            return refuse(
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
            return refuse(Refusal::new(
                RefusalKind::OriginNotAllowed,
                403,
                format!("origin {} is not allowed", origin.as_deref().unwrap_or("(none)")),
            ));
        }
    }

    let bad = |reason: String| Some(Refusal::new(RefusalKind::Malformed, 400, reason));
    let request = to_http_request(parsed).map_err(bad)?;
    let mut response = create_response(&request).map_err(|e| bad(format!("bad WebSocket upgrade request: {e}")))?;
    if let Some(chosen) = choose_subprotocol(header("sec-websocket-protocol"), &policy.subprotocols) {
        if let Ok(value) = http::HeaderValue::from_str(chosen) {
            response.headers_mut().insert("Sec-WebSocket-Protocol", value);
        }
    }
    let mut bytes = Vec::with_capacity(160);
    write_response(&mut bytes, &response).map_err(|e| bad(format!("bad WebSocket upgrade request: {e}")))?;
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

/// Writes `data[*written..]`; `Ok(true)` once all of it is out.
fn write_all(socket: &mut Socket, data: &[u8], written: &mut usize) -> Result<bool, ()> {
    while *written < data.len() {
        match socket.write_some(&data[*written..]) {
            Ok(0) => return Ok(false),
            Ok(n) => *written += n,
            Err(_) => return Err(()),
        }
    }
    Ok(true)
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
