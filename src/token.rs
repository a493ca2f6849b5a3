//! The loop's `mio::Token` space: reserved tokens, then one per slab key.
//!
//! The reserved tokens are named here; the key/token arithmetic is
//! [`TokenMap`]'s, which loadgen's loops use too.

use mio::Token;

use crate::sys::TokenMap;

/// The listening socket.
pub const LISTENER: Token = Token(0);
/// The signal pipe (SIGINT/SIGTERM), see [`crate::shutdown`].
pub const SIGNALS: Token = Token(1);
/// The waker of [`crate::shutdown::StopHandle`].
pub const WAKER: Token = Token(2);
/// The `--metrics-listen` socket.
pub const METRICS_LISTENER: Token = Token(3);
/// Connections: slab key + 4, after the reserved tokens above.
const CONNECTIONS: TokenMap = TokenMap::new(4);

/// The token a connection stored under slab key `key` is registered with.
pub fn for_connection(key: usize) -> Token {
    CONNECTIONS.token(key)
}

/// The slab key of a connection token, or `None` for a reserved token.
pub fn connection_key(token: Token) -> Option<usize> {
    CONNECTIONS.key(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_collide_with_reserved_tokens() {
        for key in [0, 1, 77, usize::MAX - 4] {
            let token = for_connection(key);
            assert_ne!(token, LISTENER);
            assert_ne!(token, SIGNALS);
            assert_ne!(token, WAKER);
            assert_ne!(token, METRICS_LISTENER);
            assert_eq!(connection_key(token), Some(key));
        }
        assert_eq!(connection_key(LISTENER), None);
        assert_eq!(connection_key(SIGNALS), None);
        assert_eq!(connection_key(WAKER), None);
        assert_eq!(connection_key(METRICS_LISTENER), None);
    }
}
