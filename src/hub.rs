//! The hub: what the loops of one process share (`--workers`, `--redis`).
//!
//! Each loop keeps its own connections, rooms and metrics, and takes no lock
//! on the per-message path; the hub is how they meet:
//!
//! - **Inboxes.** A loop hands another loop messages through its inbox (a
//!   vector behind a mutex) and wakes it with its `mio::Waker` once per
//!   batch: a loop collects what it has for each other loop during an
//!   iteration and posts it at the end ([`Hub::post`]), one lock and one
//!   wake per target, however many messages.
//! - **One order per room.** Every room has an owner loop (a hash of its
//!   name). A publish on any loop goes to the owner, which delivers it to
//!   its own members and passes it on to every other loop in the order it
//!   took it, so all members of a room, on all loops, see one order. The
//!   frame travels by reference: framed once, by the loop that published it.
//! - **Redis.** The owner is also the loop that hands a room's messages to
//!   the bridge ([`crate::bridge`]), and messages from other processes go to
//!   the owner first, so they join the same order.
//! - **Figures.** `/stats` and `/metrics` on any loop show the process as a
//!   whole, as of the request: the loop that took the request asks the
//!   others ([`Cross::AskFigures`]), each answers with a copy of its metrics
//!   ([`Cross::Figures`]), and the answer goes out once all have. Nothing is
//!   copied while nobody asks (a copy of the latency histograms is about a
//!   megabyte). What is shared all the time is one number per loop, its open
//!   connections, which `--max-connections` (a process-wide limit) is
//!   checked against, left here at every sweep.

use std::{
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use mio::Waker;

use crate::{app::ConnectionId, bridge::Bridge, fanout::Delivered, metrics::Metrics, protocol::Kind};

/// A message from one loop to another.
#[derive(Debug)]
pub enum Cross {
    /// To a room's owner: put this message in the room's order, deliver it,
    /// pass it on (and to Redis, unless it came from there).
    Sequence { room: Arc<str>, kind: Kind, frame: Bytes, reply: Option<Reply>, from_redis: bool },
    /// From a room's owner: deliver to this loop's members of the room.
    Deliver { room: Arc<str>, frame: Bytes, reply: Option<Reply> },
    /// A loop's share of a `POST /publish`'s deliveries, for the
    /// connection waiting to answer it.
    Delivered { to: ConnectionId, counts: Delivered },
    /// From another process, through Redis: the owner frames it and
    /// sequences it.
    FromRedis { room: Arc<str>, kind: Kind, payload: Bytes },
    /// A `/stats` or `/metrics` request on another loop: send it a copy of
    /// this loop's figures.
    AskFigures { reply: Reply },
    /// Loop `from`'s figures, for the connection answering `/stats` or
    /// `/metrics`.
    Figures { to: ConnectionId, from: usize, metrics: Box<Metrics> },
}

/// Where a `POST /publish` waits for its delivery counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub loop_index: usize,
    pub to: ConnectionId,
}

/// One loop, as the others see it.
#[derive(Debug)]
struct Slot {
    inbox: Mutex<Vec<Cross>>,
    waker: Arc<Waker>,
    /// The loop's connections that count against `--max-connections`, as
    /// of its last sweep.
    open: AtomicU64,
}

/// What the loops of a process share.
pub struct Hub {
    slots: Vec<Slot>,
    bridge: Option<Bridge>,
    /// Fixed hasher state, so every loop agrees on a room's owner.
    hasher: BuildHasherDefault<DefaultHasher>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("loops", &self.slots.len()).field("redis", &self.bridge.is_some()).finish()
    }
}

impl Hub {
    /// A hub for loops woken by `wakers` (one per loop, in loop order), and
    /// the bridge to other processes, if any.
    pub fn new(wakers: Vec<Arc<Waker>>, bridge: Option<Bridge>) -> Hub {
        let slots = wakers
            .into_iter()
            .map(|waker| Slot { inbox: Mutex::new(Vec::new()), waker, open: AtomicU64::new(0) })
            .collect();
        Hub { slots, bridge, hasher: BuildHasherDefault::default() }
    }

    /// Loops in the process.
    pub fn loops(&self) -> usize {
        self.slots.len()
    }

    /// The bridge to other processes, with `--redis`.
    pub fn bridge(&self) -> Option<&Bridge> {
        self.bridge.as_ref()
    }

    /// The bridge, to shut it down once the loops are done.
    pub fn into_bridge(self) -> Option<Bridge> {
        self.bridge
    }

    /// The loop that puts `room`'s messages in order.
    pub fn owner(&self, room: &str) -> usize {
        (self.hasher.hash_one(room) % self.slots.len() as u64) as usize
    }

    /// Hands `messages` to loop `to`, waking it if its inbox was empty (a
    /// non-empty inbox has a wake on its way already).
    pub fn post(&self, to: usize, messages: &mut Vec<Cross>) {
        if messages.is_empty() {
            return;
        }
        let slot = &self.slots[to];
        let was_empty = match slot.inbox.lock() {
            Ok(mut inbox) => {
                let was_empty = inbox.is_empty();
                inbox.append(messages);
                was_empty
            }
            // A loop that panicked holding its inbox is gone: nothing to deliver to.
            Err(_) => {
                messages.clear();
                return;
            }
        };
        if was_empty {
            // A failed wake means the loop is gone.
            let _ = slot.waker.wake();
        }
    }

    /// Takes what other loops posted to loop `index`, into `into` (whose
    /// allocation is kept between calls).
    pub fn take(&self, index: usize, into: &mut Vec<Cross>) {
        if let Ok(mut inbox) = self.slots[index].inbox.lock() {
            std::mem::swap(&mut *inbox, into);
        }
    }

    /// Leaves loop `index`'s open-connection count for the others.
    pub fn report_open(&self, index: usize, open: u64) {
        self.slots[index].open.store(open, Ordering::Relaxed);
    }

    /// Asks every loop but `reply.loop_index` for its figures, for the
    /// connection `reply.to` (each answers with [`Cross::Figures`]).
    pub fn ask_figures(&self, reply: Reply) {
        let mut ask = Vec::with_capacity(1);
        for other in (0..self.slots.len()).filter(|&i| i != reply.loop_index) {
            // `post` empties `ask`.
            ask.push(Cross::AskFigures { reply });
            self.post(other, &mut ask);
        }
    }

    /// Connections open in the process, counting loop `index` as `own`
    /// (its live figure) and the others as of their last report.
    pub fn open_connections(&self, index: usize, own: u64) -> u64 {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, slot)| if i == index { own } else { slot.open.load(Ordering::Relaxed) })
            .sum()
    }
}
