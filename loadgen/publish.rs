//! `loadgen publish`: one `POST /publish/ROOM` whose body is a stamped
//! payload ([`wsloop::wire`]), the server's answer printed.
//!
//! This is how a test measures a publish reaching every held connection:
//! `loadgen --mode idle` subscribers time each stamped message from the
//! stamp's intended time, which is taken here just before the request is
//! written (`CLOCK_MONOTONIC`: the same clock in every process of the host).
//!
//! The HTTP client is a few lines over a blocking [`TcpStream`]: one request
//! with `Connection: close`, the answer read to its end (or its
//! `Content-Length`), parsed with httparse. Nothing the server sends is
//! trusted: a malformed, oversized or late answer is an error, never a panic.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Parser;
use serde::Serialize;
use tungstenite::http::Uri;
use wsloop::{
    clock::monotonic_ns,
    units::{format_duration, parse_duration, parse_size},
    wire::{payload_template, Encoding, Stamp},
};

use crate::{cli::MAX_SIZE, output, report::format_latency};

/// Where to publish when no URL is given: wsloop's default address.
const DEFAULT_PUBLISH_URL: &str = "http://127.0.0.1:9001";

/// The connection id written into the stamp: no connection of a loadgen
/// run has it (ids count from 0), so a broadcast subscriber calls it foreign.
pub const PUBLISH_ID: u32 = u32::MAX;

/// Largest answer accepted: wsloop's is one short JSON line.
const MAX_ANSWER: usize = 64 << 10;

/// The JSON document's version.
const SCHEMA: &str = "loadgen-publish/1";

/// Sends one POST /publish/ROOM with a stamped payload and prints the answer.
///
/// The payload is the one loadgen's own messages carry: a stamp (sequence
/// number, intended and actual send time, connection id 4294967295) and a
/// fixed filler, so that `loadgen --mode idle` subscribers count it as a
/// delivery and time it from the stamp. Prints the stamp time and the
/// server's `{"delivered": N, "dropped": M}`.
///
/// Exit status: 0 on a 200 answer; 1 if the server cannot be reached or
/// answers anything else; 2 on bad flags.
#[derive(Debug, Parser)]
#[command(name = "loadgen publish", version)]
pub struct PublishCli {
    /// The server, http://HOST:PORT or ws://HOST:PORT/ROOM (its main port, or
    /// its --metrics-listen address) [default: http://127.0.0.1:9001].
    #[arg(value_name = "URL")]
    pub url: Option<String>,

    /// The room, e.g. /feed or feed (the path its members connected to) [default: the URL's path].
    #[arg(long, env = "LOADGEN_ROOM")]
    pub room: Option<String>,

    /// The server's --publish-token (better from the variable: a flag's value is visible in ps).
    #[arg(long, env = "LOADGEN_PUBLISH_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Payload bytes (at least 32 for binary, 64 for text), e.g. 512 or 4KiB.
    #[arg(short = 's', long, env = "LOADGEN_SIZE", default_value = "512B", value_parser = parse_size)]
    pub size: usize,

    /// Send a text message (Content-Type: text/plain; the stamp as hex) instead of binary.
    #[arg(long, env = "LOADGEN_TEXT")]
    pub text: bool,

    /// The stamp's sequence number (to tell several publishes apart).
    #[arg(long, default_value_t = 0)]
    pub seq: u64,

    /// Time allowed for connecting, sending and the whole answer.
    #[arg(long, env = "LOADGEN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Also write the result as one JSON document to this file.
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,
}

/// The result, as printed and as JSON.
#[derive(Debug, Serialize)]
pub struct Published {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// `http://HOST:PORT/publish/ROOM`.
    pub url: String,
    /// The room.
    pub room: String,
    /// Payload bytes.
    pub size_bytes: usize,
    /// `binary` or `text`.
    pub encoding: &'static str,
    /// The stamp it carried.
    pub stamp: StampOut,
    /// The HTTP status of the answer.
    pub status: u16,
    /// From the stamp's time to the complete answer, microseconds.
    pub answer_us: f64,
    /// The server's `delivered` (its own local members), if the answer had one.
    pub delivered: Option<u64>,
    /// The server's `dropped`, if the answer had one.
    pub dropped: Option<u64>,
    /// The answer's body as text.
    pub body: String,
}

/// The stamp's fields.
#[derive(Debug, Serialize)]
pub struct StampOut {
    pub seq: u64,
    /// `CLOCK_MONOTONIC` nanoseconds, taken just before the request was written.
    pub intended_ns: u64,
    pub connection: u32,
}

/// What to send where, checked.
#[derive(Debug)]
struct Request {
    addr: SocketAddr,
    /// `HOST:PORT`, for the Host header.
    authority: String,
    room: String,
    encoding: Encoding,
    size: usize,
}

/// Runs `loadgen publish ARGS` (`args` starts with the program name, then
/// `publish`); returns the exit status.
pub fn main(args: Vec<std::ffi::OsString>) -> u8 {
    // `loadgen publish ...` parses as one program named "loadgen publish" (its usage line says so).
    let args = std::iter::once("loadgen publish".into()).chain(args.into_iter().skip(2));
    let cli = PublishCli::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let request = match cli.request() {
        Ok(request) => request,
        Err(message) => {
            output::stderr_line(&format!("error: {message}"));
            return 2;
        }
    };
    match publish(&cli, &request) {
        Ok(result) => {
            output::stdout(&result.summary());
            if let Some(path) = &cli.json {
                let written = std::fs::File::create(path)
                    .map_err(|e| e.to_string())
                    .and_then(|file| serde_json::to_writer_pretty(file, &result).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    output::stderr_line(&format!("loadgen publish: cannot write {}: {e}", path.display()));
                    return 1;
                }
            }
            if result.status == 200 {
                0
            } else {
                output::stderr_line(&format!("loadgen publish: the server answered {}", result.status));
                1
            }
        }
        Err(message) => {
            output::stderr_line(&format!("loadgen publish: {message}"));
            1
        }
    }
}

impl PublishCli {
    fn request(&self) -> Result<Request, String> {
        let url = self.url.as_deref().unwrap_or(DEFAULT_PUBLISH_URL);
        let uri: Uri = url.parse().map_err(|e| format!("URL {url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "ws") => {}
            Some("https" | "wss") => return Err("TLS is not supported; publish on a plain address".into()),
            _ => return Err(format!("URL {url:?} must start with http:// or ws://")),
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("URL {url:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        let room = match &self.room {
            Some(room) if room.starts_with('/') => room.clone(),
            Some(room) => format!("/{room}"),
            None => uri.path().to_string(),
        };
        if room.len() < 2 {
            return Err("no room: give --room (or a URL with the room as its path); / cannot be published to".into());
        }
        if let Some(bad) = room.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#')) {
            return Err(format!("the room {room:?} has a character a request path cannot carry: {bad:?}"));
        }
        let encoding = if self.text { Encoding::Text } else { Encoding::Binary };
        if self.size < encoding.stamp_len() || self.size > MAX_SIZE {
            return Err(format!(
                "--size {} must be between {} and {MAX_SIZE} bytes for a {} payload (the stamp)",
                self.size,
                encoding.stamp_len(),
                encoding.as_str()
            ));
        }
        if self.token.is_empty() || self.token.chars().any(|c| c.is_control()) {
            return Err("--token is empty or has a control character".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be greater than 0".into());
        }
        Ok(Request { addr, authority: format!("{host}:{port}"), room, encoding, size: self.size })
    }
}

/// Connects, sends the stamped request, reads the answer.
fn publish(cli: &PublishCli, request: &Request) -> Result<Published, String> {
    let started = Instant::now();
    let left = |what: &str| {
        cli.timeout.checked_sub(started.elapsed()).filter(|d| !d.is_zero()).ok_or_else(|| {
            format!("no answer from {} within --timeout {} ({what})", request.addr, format_duration(cli.timeout))
        })
    };
    let mut stream = TcpStream::connect_timeout(&request.addr, cli.timeout)
        .map_err(|e| format!("cannot connect to {}: {e}", request.addr))?;
    let _ = stream.set_nodelay(true);

    let mut body = payload_template(request.encoding, request.size);
    let intended_ns = monotonic_ns();
    let stamp = Stamp { seq: cli.seq, intended_ns, sent_ns: intended_ns, connection: PUBLISH_ID };
    stamp.write(request.encoding, &mut body);
    let content_type = match request.encoding {
        Encoding::Text => "text/plain; charset=utf-8",
        Encoding::Binary => "application/octet-stream",
    };
    let mut bytes = format!(
        "POST /publish{} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.room,
        request.authority,
        cli.token,
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    stream.set_write_timeout(Some(left("sending")?)).map_err(|e| e.to_string())?;
    stream.write_all(&bytes).map_err(|e| format!("sending the request: {e}"))?;

    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let (status, body) = loop {
        if let Some(parsed) = parse_answer(&answer)? {
            break parsed;
        }
        stream.set_read_timeout(Some(left("reading the answer")?)).map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                // The end of the stream ends a body without a length.
                match parse_answer_at_eof(&answer)? {
                    Some(parsed) => break parsed,
                    None => return Err(format!("the server closed the connection after {} bytes", answer.len())),
                }
            }
            Ok(n) if answer.len() + n > MAX_ANSWER => return Err(format!("an answer over {MAX_ANSWER} bytes")),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(left("reading the answer").err().unwrap_or_else(|| format!("reading the answer: {e}")))
            }
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    };
    let answer_us = monotonic_ns().saturating_sub(intended_ns) as f64 / 1e3;
    let counts: Option<serde_json::Value> = serde_json::from_str(&body).ok();
    let field = |name: &str| counts.as_ref().and_then(|v| v.get(name)).and_then(serde_json::Value::as_u64);
    Ok(Published {
        schema: SCHEMA,
        url: format!("http://{}/publish{}", request.authority, request.room),
        room: request.room.clone(),
        size_bytes: request.size,
        encoding: request.encoding.as_str(),
        stamp: StampOut { seq: stamp.seq, intended_ns, connection: stamp.connection },
        status,
        answer_us,
        delivered: field("delivered"),
        dropped: field("dropped"),
        body,
    })
}

/// The head of an answer: status, body start and `Content-Length`, once complete.
fn parse_head(answer: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(answer) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(head_len)) => {
            let status = response.code.ok_or("an answer without a status")?;
            let mut length = None;
            for header in response.headers.iter() {
                if header.name.eq_ignore_ascii_case("content-length") {
                    let text = std::str::from_utf8(header.value).map_err(|_| "a Content-Length that is not text")?;
                    length = Some(text.trim().parse::<usize>().map_err(|_| format!("Content-Length {text:?}"))?);
                }
            }
            Ok(Some((status, head_len, length)))
        }
        Err(e) => Err(format!("the answer is not HTTP: {e}")),
    }
}

/// Status and body, once the head and `Content-Length` bytes are in.
fn parse_answer(answer: &[u8]) -> Result<Option<(u16, String)>, String> {
    match parse_head(answer)? {
        Some((status, at, Some(length))) if answer.len() >= at + length => {
            Ok(Some((status, String::from_utf8_lossy(&answer[at..at + length]).into_owned())))
        }
        _ => Ok(None),
    }
}

/// Status and body at the end of the stream (a body without a length runs to it).
fn parse_answer_at_eof(answer: &[u8]) -> Result<Option<(u16, String)>, String> {
    match parse_head(answer)? {
        Some((_, _, Some(length))) => Err(format!("the answer ended before its {length}-byte body")),
        Some((status, at, None)) => Ok(Some((status, String::from_utf8_lossy(&answer[at..]).into_owned()))),
        None => Ok(None),
    }
}

impl Published {
    /// The human lines (stdout).
    pub fn summary(&self) -> String {
        let answer = match (self.delivered, self.dropped) {
            (Some(delivered), Some(dropped)) => format!("delivered {delivered}, dropped {dropped}"),
            _ => self.body.trim().to_string(),
        };
        format!(
            "publish {}: {} B {}, stamp seq {} intended_ns {} (CLOCK_MONOTONIC)\n\
             answer {} after {}: {answer}\n",
            self.url,
            self.size_bytes,
            self.encoding,
            self.stamp.seq,
            self.stamp.intended_ns,
            self.status,
            format_latency((self.answer_us * 1e3) as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Request, String> {
        let mut argv = vec!["loadgen publish", "--token", "t"];
        argv.extend_from_slice(args);
        PublishCli::try_parse_from(argv).map_err(|e| e.to_string())?.request()
    }

    #[test]
    fn the_room_comes_from_the_flag_or_the_path() {
        let r = cli(&["http://127.0.0.1:9100", "--room", "feed"]).unwrap();
        assert_eq!((r.addr.port(), r.room.as_str(), r.authority.as_str()), (9100, "/feed", "127.0.0.1:9100"));
        assert_eq!(cli(&["ws://127.0.0.1:9100/chat/lobby"]).unwrap().room, "/chat/lobby");
        assert_eq!(cli(&["ws://127.0.0.1:9100/x", "--room", "/y"]).unwrap().room, "/y");
        assert!(cli(&["http://127.0.0.1:9100/"]).unwrap_err().contains("no room"));
        assert!(cli(&["--room", "a b"]).unwrap_err().contains("cannot carry"));
        assert!(cli(&["--room", "/a", "--size", "31"]).is_err());
        assert!(cli(&["--room", "/a", "--text", "--size", "63"]).is_err());
        assert!(cli(&["https://127.0.0.1/", "--room", "a"]).is_err());
    }

    #[test]
    fn answers_are_parsed_without_trusting_them() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 32\r\n\r\n{\"delivered\": 3, \"dropped\": 0}\n\n";
        assert_eq!(parse_answer(ok).unwrap(), Some((200, "{\"delivered\": 3, \"dropped\": 0}\n\n".to_string())));
        assert_eq!(parse_answer(&ok[..40]).unwrap(), None, "body not complete");
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\n").unwrap(), None, "head not complete");
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert_eq!(parse_answer_at_eof(b"HTTP/1.1 401 Unauthorized\r\n\r\nno").unwrap(), Some((401, "no".to_string())));
        assert!(parse_answer_at_eof(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    }
}
