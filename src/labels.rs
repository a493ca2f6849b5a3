//! What the counters count by: the reasons a request was refused, the ways
//! a handshake failed, the page routes; each an enum whose variants index a
//! counter array and name a `/stats` key and a Prometheus label.
//!
//! [`labels!`](crate::labels!) writes the pattern once: the enum, `ALL` (every variant, in
//! declaration order, so `variant as usize` indexes the array) and
//! `as_str` (the label).

/// An enum of labels: `Variant => "label"` for each, with `ALL` and
/// `as_str` (see the module docs). Attributes (docs, derives) pass through.
#[macro_export]
macro_rules! labels {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $label:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant, )*
        }

        impl $name {
            /// Every variant, in order: `variant as usize` is its index here.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The label, for `/stats` keys and Prometheus labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

labels! {
    /// Why a request was refused, for the log line and the metrics label.
    pub enum RefusalKind {
        /// Not valid HTTP, or an upgrade request tungstenite rejects.
        Malformed => "malformed",
        /// An upgrade request on the metrics-only listener.
        NotUpgrade => "not_upgrade",
        /// `Sec-WebSocket-Version` other than 13.
        UnsupportedVersion => "unsupported_version",
        /// Request head over `MAX_REQUEST_HEAD`, or too many header fields.
        HeadTooLarge => "head_too_large",
        /// `Origin` not in the allowlist.
        OriginNotAllowed => "origin_not_allowed",
        /// `--max-connections` reached.
        TooManyConnections => "too_many_connections",
        /// A `POST /publish` refused: publishing off, no or a wrong token, a
        /// missing or bad length, a body too large or not UTF-8 for text.
        Publish => "publish",
    }
}

labels! {
    /// How a handshake ended without opening, for the log and the metrics.
    pub enum HandshakeFailure {
        /// The peer closed before sending a complete request.
        PeerClosed => "peer_closed",
        /// A socket error (reset, ...).
        Io => "io_error",
        /// `--handshake-timeout` passed (slowloris).
        Timeout => "timeout",
        /// The TLS handshake failed: an alert from the peer (a certificate it
        /// does not trust), or records that are not TLS (a plain-text client).
        Tls => "tls",
    }
}

labels! {
    /// The plain HTTP routes.
    pub enum Route {
        /// `GET /`: the monitor page.
        Monitor => "monitor",
        /// `GET /stats`: the figures as JSON.
        Stats => "stats",
        /// `GET /metrics`: the figures for Prometheus.
        Metrics => "metrics",
        /// Anything else: 404.
        NotFound => "not_found",
        /// A known path with a method other than GET or HEAD: 405.
        MethodNotAllowed => "method_not_allowed",
    }
}

impl Route {
    /// Whether its answer is made of the figures (with `--workers`, the
    /// whole process's).
    pub fn shows_figures(self) -> bool {
        matches!(self, Route::Stats | Route::Metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_index_their_arrays_and_labels_are_unique() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            index: impl Fn(T) -> usize,
            label: impl Fn(T) -> &'static str,
        ) {
            for (i, v) in all.iter().enumerate() {
                assert_eq!(index(*v), i, "{v:?}");
            }
            let mut labels: Vec<_> = all.iter().map(|v| label(*v)).collect();
            labels.sort();
            labels.dedup();
            assert_eq!(labels.len(), all.len());
        }
        check(RefusalKind::ALL, |v| v as usize, RefusalKind::as_str);
        check(HandshakeFailure::ALL, |v| v as usize, HandshakeFailure::as_str);
        check(Route::ALL, |v| v as usize, Route::as_str);
    }
}
