//! Plain HTTP/1.1 responses: the refusals of the opening handshake.
//!
//! Every refused request gets a complete response with a one-line reason in
//! its body and `Connection: close`, so a human with `curl` and a client
//! library both learn what was wrong.

use std::fmt::Write as _;

/// A complete HTTP response, rendered once into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    /// An error response whose body is `reason` and a newline.
    pub fn error(status: u16, reason: impl Into<String>) -> Self {
        let mut body = reason.into().into_bytes();
        body.push(b'\n');
        Response { status, headers: Vec::new(), content_type: "text/plain; charset=utf-8", body }
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
        bytes.extend_from_slice(&self.body);
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
        405 => "Method Not Allowed",
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
}
