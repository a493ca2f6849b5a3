//! Plain HTTP/1.1: the few read-only routes served beside the WebSocket
//! endpoint, and the responses (refusals included).
//!
//! Every response is complete, carries `Connection: close` (one request per
//! connection: these routes are scraped, not browsed at length), and an
//! error's body is a one-line reason, so a human with `curl` and a client
//! library both learn what was wrong.

use std::fmt::Write as _;

pub use crate::labels::Route;

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// The main port: the page, /stats and /metrics.
    All,
    /// The main port with `--no-http-pages`: none.
    None,
    /// `--metrics-listen`: /stats and /metrics, never the page.
    MetricsOnly,
}

/// The path of a request target: without the query string or fragment.
pub fn path_of(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or("")
}

/// The room a `POST /publish/ROOM` target names: the WebSocket path its
/// members connected to (`/publish/chat/lobby` is room `/chat/lobby`).
pub fn publish_room(target: &str) -> Option<&str> {
    path_of(target).strip_prefix("/publish").filter(|room| room.len() > 1 && room.starts_with('/'))
}

/// The page route for a plain (non-upgrade) request that is not a publish
/// (see [`publish_room`]), as `routes` says.
pub fn route(method: &str, target: &str, routes: Routes) -> Route {
    if publish_room(target).is_some() {
        return Route::MethodNotAllowed;
    }
    let found = match (path_of(target), routes) {
        (_, Routes::None) => None,
        ("/" | "/index.html", Routes::All) => Some(Route::Monitor),
        ("/stats", _) => Some(Route::Stats),
        ("/metrics", _) => Some(Route::Metrics),
        _ => None,
    };
    match found {
        None => Route::NotFound,
        Some(_) if method != "GET" && method != "HEAD" => Route::MethodNotAllowed,
        Some(route) => route,
    }
}

/// The methods a target allows (for `405`'s `Allow`).
pub fn allowed_methods(target: &str) -> &'static str {
    if publish_room(target).is_some() {
        "POST"
    } else {
        "GET, HEAD"
    }
}

/// A complete HTTP response, rendered once into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Answer to a HEAD request: the headers (with the body's length) only.
    pub head_only: bool,
}

impl Response {
    /// A 200 response.
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Response { status: 200, headers: Vec::new(), content_type, body, head_only: false }
    }

    /// An error response whose body is `reason` and a newline.
    pub fn error(status: u16, reason: impl Into<String>) -> Self {
        let mut body = reason.into().into_bytes();
        body.push(b'\n');
        Response { status, headers: Vec::new(), content_type: "text/plain; charset=utf-8", body, head_only: false }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The body without its trailing newline: the reason, for logs.
    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("").trim_end()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = String::with_capacity(160);
        // Writing into a String cannot fail.
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nServer: wsloop\r\nConnection: close\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            status_text(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// The reason phrase of the status codes this server sends.
pub fn status_text(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_complete_response() {
        let response =
            Response::error(426, "unsupported WebSocket version 8").with_header("Sec-WebSocket-Version", "13");
        let text = String::from_utf8(response.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nContent-Length: 32\r\n"));
        assert!(text.ends_with("\r\n\r\nunsupported WebSocket version 8\n"));
        assert_eq!(response.reason(), "unsupported WebSocket version 8");
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/", Routes::All), Route::Monitor);
        assert_eq!(route("GET", "/stats?x=1", Routes::All), Route::Stats);
        assert_eq!(route("HEAD", "/metrics", Routes::All), Route::Metrics);
        assert_eq!(route("POST", "/metrics", Routes::All), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/nope", Routes::All), Route::NotFound);
        assert_eq!(route("GET", "/", Routes::MetricsOnly), Route::NotFound);
        assert_eq!(route("GET", "/metrics", Routes::MetricsOnly), Route::Metrics);
        assert_eq!(route("GET", "/metrics", Routes::None), Route::NotFound);
        assert_eq!(route("GET", "/", Routes::None), Route::NotFound);
        assert_eq!(route("GET", "/publish/alerts", Routes::All), Route::MethodNotAllowed);
        assert_eq!(allowed_methods("/publish/alerts"), "POST");
        assert_eq!(route("POST", "/publish/", Routes::All), Route::NotFound);
        assert_eq!(publish_room("/publish/chat/lobby?x=1"), Some("/chat/lobby"));
        assert_eq!(publish_room("/publishers"), None);
    }

    #[test]
    fn head_keeps_the_length_but_not_the_body() {
        let mut response = Response::ok("text/plain", b"hello".to_vec());
        response.head_only = true;
        let text = String::from_utf8(response.to_bytes()).unwrap();
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
