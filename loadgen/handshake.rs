//! The client side of the opening handshake, built from tungstenite's pieces.
//!
//! tungstenite formats and validates the request once per run
//! ([`ClientRequestBuilder`], `generate_request`); each connection gets a
//! copy with a fresh `Sec-WebSocket-Key` ([`generate_key`]) patched in, and the
//! `Sec-WebSocket-Accept` it must get back ([`derive_accept_key`]).
//!
//! The response is parsed with httparse and checked against RFC 6455 §4.1
//! here rather than through tungstenite's `ClientHandshake`, because its
//! `MidHandshake` (a) reports failures only as a consumed error, where a load
//! generator needs the exact reason and HTTP status for its counts, (b) folds
//! any bytes that follow the 101 into a `WebSocket` whose frames we do not
//! use, where they must reach our own frame reader, and (c) allocates a
//! `WebSocket` and its buffers per connection, which churn mode would pay
//! for on every cycle. The checks are the ones tungstenite's (private)
//! `VerifyData::verify_response` makes, plus the extension rule it leaves as a TODO.

use tungstenite::{
    client::{ClientRequestBuilder, IntoClientRequest},
    handshake::{
        client::{generate_key, generate_request},
        derive_accept_key,
    },
    http::Uri,
};

/// Length of a `Sec-WebSocket-Key` (16 random bytes in base64); tungstenite's
/// server refuses any other length.
const KEY_LEN: usize = 24;

/// Largest response head accepted; a server sending more is broken or hostile.
pub const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// Response header fields parsed at most (httparse needs a fixed array).
const MAX_RESPONSE_HEADERS: usize = 64;

/// The request every connection sends, with the key's position.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// The request as tungstenite formatted it.
    bytes: Vec<u8>,
    /// Offset of the 24-character `Sec-WebSocket-Key` value in `bytes`.
    key_at: usize,
    /// Subprotocols offered, to check the server's choice against.
    offered: Vec<String>,
}

/// A connection's own request and the answer it expects.
#[derive(Debug)]
pub struct Request {
    /// The request to send.
    pub bytes: Vec<u8>,
    /// The `Sec-WebSocket-Accept` value the 101 must carry.
    pub expected_accept: String,
}

impl RequestTemplate {
    /// Builds the request for `uri` with extra `headers` and offered `subprotocols`.
    pub fn new(uri: &Uri, headers: &[(String, String)], subprotocols: &[String]) -> Result<Self, String> {
        let mut builder = ClientRequestBuilder::new(uri.clone());
        for (name, value) in headers {
            builder = builder.with_header(name.clone(), value.clone());
        }
        for protocol in subprotocols {
            builder = builder.with_sub_protocol(protocol.clone());
        }
        let request = builder.into_client_request().map_err(|e| format!("cannot build the request: {e}"))?;
        let (bytes, key) = generate_request(request).map_err(|e| format!("cannot build the request: {e}"))?;
        let key_at = bytes
            .windows(key.len())
            .position(|window| window == key.as_bytes())
            .filter(|_| key.len() == KEY_LEN)
            .ok_or("tungstenite's request has no Sec-WebSocket-Key")?;
        Ok(RequestTemplate { bytes, key_at, offered: subprotocols.to_vec() })
    }

    /// A request with a fresh key (RFC 6455: a new random key per connection).
    pub fn instantiate(&self) -> Request {
        let key = generate_key();
        let mut bytes = self.bytes.clone();
        bytes[self.key_at..self.key_at + KEY_LEN].copy_from_slice(key.as_bytes());
        Request { bytes, expected_accept: derive_accept_key(key.as_bytes()) }
    }

    pub fn offered(&self) -> &[String] {
        &self.offered
    }
}

/// Why a response was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// An HTTP status other than 101.
    Status(u16),
    /// Not an acceptable 101; the text says which rule it broke.
    Invalid(String),
}

/// Parses the response received so far: `Ok(None)` if incomplete,
/// `Ok(Some(head_len))` for a valid 101 whose head is `buf[..head_len]`
/// (anything after it is already WebSocket traffic).
pub fn check_response(buf: &[u8], expected_accept: &str, offered: &[String]) -> Result<Option<usize>, Refused> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(Refused::Invalid(format!("response head longer than {MAX_RESPONSE_HEAD} bytes")))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Refused::Invalid(format!("not an HTTP response: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(Refused::Status(status));
    }
    let header = |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let invalid = |why: &str| Err(Refused::Invalid(why.to_string()));
    // RFC 6455 §4.1, the client's checks of the server's handshake, in order.
    if !header("Upgrade").is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket")) {
        return invalid("101 without Upgrade: websocket");
    }
    if !header("Connection")
        .is_some_and(|v| v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")))
    {
        return invalid("101 without Connection: Upgrade");
    }
    if header("Sec-WebSocket-Accept").map(<[u8]>::trim_ascii) != Some(expected_accept.as_bytes()) {
        return invalid("Sec-WebSocket-Accept does not match the key");
    }
    if header("Sec-WebSocket-Extensions").is_some_and(|v| !v.trim_ascii().is_empty()) {
        return invalid("server selected an extension that was not offered");
    }
    match header("Sec-WebSocket-Protocol") {
        None if !offered.is_empty() => return invalid("server selected none of the offered subprotocols"),
        None => {}
        Some(_) if offered.is_empty() => return invalid("server selected a subprotocol that was not offered"),
        Some(chosen) if !offered.iter().any(|p| p.as_bytes() == chosen.trim_ascii()) => {
            return invalid("server selected a subprotocol that was not offered")
        }
        Some(_) => {}
    }
    Ok(Some(head_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(subprotocols: &[&str]) -> RequestTemplate {
        let uri: Uri = "ws://127.0.0.1:9001/chat?x=1".parse().unwrap();
        let protocols: Vec<String> = subprotocols.iter().map(|s| s.to_string()).collect();
        RequestTemplate::new(&uri, &[("X-Test".into(), "yes".into())], &protocols).unwrap()
    }

    fn response(accept: &str, extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn each_request_has_its_own_key() {
        let t = template(&[]);
        let (a, b) = (t.instantiate(), t.instantiate());
        assert_ne!(a.bytes, b.bytes);
        assert_ne!(a.expected_accept, b.expected_accept);
        let text = String::from_utf8(a.bytes).unwrap();
        assert!(text.starts_with("GET /chat?x=1 HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("Host: 127.0.0.1:9001\r\n"));
        assert!(text.to_ascii_lowercase().contains("x-test: yes\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn accepts_a_valid_101_and_reports_where_frames_start() {
        let request = template(&[]).instantiate();
        let mut bytes = response(&request.expected_accept, "");
        let head = bytes.len();
        assert_eq!(check_response(&bytes[..head - 1], &request.expected_accept, &[]), Ok(None));
        bytes.extend_from_slice(&[0x82, 0x00]);
        assert_eq!(check_response(&bytes, &request.expected_accept, &[]), Ok(Some(head)));
    }

    #[test]
    fn refuses_what_rfc_6455_says_to_fail() {
        let request = template(&[]).instantiate();
        let accept = &request.expected_accept;
        let status = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(check_response(status, accept, &[]), Err(Refused::Status(503)));
        assert!(check_response(&response("wrong", ""), accept, &[]).is_err());
        assert!(
            check_response(&response(accept, "Sec-WebSocket-Extensions: permessage-deflate\r\n"), accept, &[]).is_err()
        );
        assert!(check_response(&response(accept, "Sec-WebSocket-Protocol: chat\r\n"), accept, &[]).is_err());
        assert!(check_response(b"SSH-2.0-OpenSSH\r\n\r\n", accept, &[]).is_err());
        let offered = vec!["chat".to_string()];
        assert!(check_response(&response(accept, ""), accept, &offered).is_err());
        assert_eq!(
            check_response(&response(accept, "Sec-WebSocket-Protocol: chat\r\n"), accept, &offered),
            Ok(Some(response(accept, "Sec-WebSocket-Protocol: chat\r\n").len()))
        );
    }
}
