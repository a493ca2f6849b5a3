//! What the fuzz targets share, none of it tied to wsloop's API (so a target
//! is repointed at a new API by changing only its adapter):
//!
//! - [`frames`]: the frame-path harness: the input's first bytes choose the
//!   limits and where the stream is split into wakeups; the rest is the
//!   client's byte stream. After the run, the server's output is checked
//!   against what the client sent.
//! - [`wire`]: the WebSocket frame format, written out independently of
//!   tungstenite and wsloop: an encoder for the seeds (it writes what no
//!   correct client sends too) and a permissive decoder, the oracle.
//! - [`tls`]: the TLS record target's plan (which side, reads of what size)
//!   and both sides' configurations.
//! - [`alloc`]: a counting global allocator, so a run's peak heap can be held
//!   to the configured limits.

pub mod alloc;
pub mod frames;
pub mod tls;
pub mod wire;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;
