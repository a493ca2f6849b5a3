//! What the plain HTTP routes answer: the monitor page, `/stats`, `/metrics`,
//! and 404/405 for everything else.

use std::{net::SocketAddr, time::Duration};

use crate::{
    bridge::BridgeStats,
    config::Config,
    http::{Response, Route},
    metrics::Metrics,
    report::Snapshot,
};

/// The monitor page: one self-contained HTML file (no CDN, no build step),
/// compiled into the binary.
pub const MONITOR_PAGE: &str = include_str!("monitor.html");

/// What the responses are made from.
pub struct Source<'a> {
    /// The loop's figures, or the process's (all loops merged).
    pub metrics: &'a Metrics,
    /// Open connections per loop, with `--workers` (empty otherwise).
    pub loops: &'a [u64],
    /// The Redis bridge's figures, with `--redis`.
    pub redis: Option<BridgeStats>,
    pub config: &'a Config,
    pub listen: SocketAddr,
    pub uptime: Duration,
}

/// The response to a plain request for `route`.
pub fn respond(route: Route, method: &str, target: &str, source: &Source<'_>) -> Response {
    let snapshot = || {
        Snapshot::new(source.metrics, source.config, source.listen, source.uptime)
            .with_process(source.loops, source.redis)
    };
    let mut response = match route {
        // Cross-origin isolation lets the page's performance.now() tick in
        // microseconds rather than 100 us steps; it loads nothing from elsewhere.
        Route::Monitor => Response::ok("text/html; charset=utf-8", MONITOR_PAGE.as_bytes().to_vec())
            .with_header("Cross-Origin-Opener-Policy", "same-origin")
            .with_header("Cross-Origin-Embedder-Policy", "require-corp")
            .with_header("Cache-Control", "no-cache"),
        Route::Stats => Response::ok("application/json", snapshot().to_json()).with_header("Cache-Control", "no-store"),
        Route::Metrics => {
            Response::ok("text/plain; version=0.0.4; charset=utf-8", snapshot().to_prometheus().into_bytes())
                .with_header("Cache-Control", "no-store")
        }
        Route::NotFound => Response::error(
            404,
            format!(
                "nothing at {target}: WebSocket clients connect with an Upgrade request; pages are /, /stats, /metrics"
            ),
        ),
        Route::MethodNotAllowed => Response::error(405, format!("{method} is not allowed on {target}"))
            .with_header("Allow", crate::http::allowed_methods(target)),
    };
    response.head_only = method == "HEAD";
    response
}
