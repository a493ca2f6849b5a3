//! The loop's side of rooms: fanning out what was published, the drain at
//! the end of each iteration, and, with other loops (`--workers`) or other
//! processes (`--redis`), the hand-offs through the [`Hub`].

use std::sync::Arc;

use bytes::Bytes;

use super::Server;
use crate::{
    app::{App, ConnectionId},
    connection::{Connection, Context, Delivery, Step},
    fanout::{Delivered, Origin, Target},
    hub::{Cross, Hub, Reply},
    metrics::Metrics,
    protocol::{writer, Kind},
    token,
};

/// With `--workers` or `--redis`: this loop's place among the loops.
pub(super) struct Link {
    pub(super) hub: Arc<Hub>,
    pub(super) index: usize,
    /// Messages for each loop, posted at the end of the iteration.
    outgoing: Vec<Vec<Cross>>,
    /// What other loops posted, taken when the loop is woken.
    incoming: Vec<Cross>,
    /// Rooms created and freed on this loop, for the bridge.
    changes: Vec<(Arc<str>, bool)>,
}

impl Link {
    pub(super) fn new(hub: Arc<Hub>, index: usize) -> Link {
        let outgoing = (0..hub.loops()).map(|_| Vec::new()).collect();
        Link { hub, index, outgoing, incoming: Vec::new(), changes: Vec::new() }
    }
}

impl<A: App> Server<A> {
    /// Fans out each message published since the last call: alone, to this
    /// loop's members of its room; with other loops, through the room's
    /// owner (see [`crate::hub`]).
    #[inline]
    pub(super) fn fan_out(&mut self) {
        if !self.shared.lent.published.is_empty() {
            self.fan_out_published();
        }
    }

    /// [`Server::fan_out`] when something was published: out of line, so
    /// that an echo's path pays one test.
    #[inline(never)]
    fn fan_out_published(&mut self) {
        let mut published = std::mem::take(&mut self.shared.lent.published);
        for publish in published.drain(..) {
            let reply = match publish.origin {
                Origin::Http { id } => Some(Reply { loop_index: self.index(), to: id }),
                Origin::WebSocket => None,
            };
            let Some(link) = &mut self.link else {
                let counts = self.deliver_here(&publish.to, &publish.frame);
                if let Some(reply) = reply {
                    self.answer_publish(reply.to, counts);
                }
                continue;
            };
            let room = match publish.to {
                Target::Room(id) => self.shared.lent.rooms.name_of(id),
                Target::Named(name) => Some(name),
            };
            // A room gone between the publish and now has nobody to reach.
            let Some(room) = room else { continue };
            let owner = link.hub.owner(&room);
            if owner == link.index {
                self.sequence(room, publish.kind, publish.frame, reply, false);
            } else {
                let (kind, frame) = (publish.kind, publish.frame);
                link.outgoing[owner].push(Cross::Sequence { room, kind, frame, reply, from_redis: false });
            }
        }
        // Keep the vector's memory for the next call.
        self.shared.lent.published = published;
        self.close_slow_consumers();
    }

    /// This loop's index among the process's loops (0 when alone).
    pub(super) fn index(&self) -> usize {
        self.link.as_ref().map_or(0, |link| link.index)
    }

    /// On a room's owner: the message's place in the room's order is now.
    /// Delivers it here, passes it on to every other loop, and to Redis.
    fn sequence(&mut self, room: Arc<str>, kind: Kind, frame: Bytes, reply: Option<Reply>, from_redis: bool) {
        let Some(link) = &mut self.link else { return };
        for (other, out) in link.outgoing.iter_mut().enumerate() {
            if other != link.index {
                out.push(Cross::Deliver { room: room.clone(), frame: frame.clone(), reply });
            }
        }
        if let (false, Some(bridge)) = (from_redis, link.hub.bridge()) {
            // A copy, not a slice of the frame: the frame's fan-out is timed
            // by its last reference, and Redis is not a member.
            let payload = Bytes::copy_from_slice(&frame[writer::header_len(&frame)..]);
            bridge.publish(&room, kind == Kind::Text, payload);
        }
        let counts = self.deliver_here(&Target::Named(room), &frame);
        if let Some(reply) = reply {
            self.send_counts(reply, counts);
        }
    }

    /// Queues `frame` for every member of the room on this loop: one shared
    /// frame, a reference per member; members that had nothing pending are
    /// written at the end of the iteration ([`Server::drain`]), once however
    /// many messages they got.
    fn deliver_here(&mut self, to: &Target, frame: &Bytes) -> Delivered {
        let (limit, policy) = (self.shared.config.max_backpressure, self.shared.config.slow_consumer);
        let rooms = &self.shared.lent.rooms;
        let members = match to {
            Target::Room(id) => rooms.members(*id),
            Target::Named(name) => rooms.find(name).and_then(|id| rooms.members(id)),
        };
        let mut counts = Delivered::default();
        for &key in members.unwrap_or(&[]) {
            let key = key as usize;
            let Some(connection) = self.connections.get_mut(key) else { continue };
            match connection.deliver(frame, limit, policy) {
                Delivery::Queued { drain } => {
                    counts.delivered += 1;
                    if drain {
                        self.dirty.push(key);
                    }
                }
                Delivery::Skipped => counts.dropped += 1,
                Delivery::Slow => {
                    counts.dropped += 1;
                    self.slow.push(key);
                }
            }
        }
        let metrics = &mut self.shared.lent.metrics;
        metrics.rooms.deliveries += counts.delivered;
        metrics.rooms.deliveries_dropped += counts.dropped;
        // Each delivery is a data message sent.
        let header = writer::header_len(frame);
        let text = frame.first().is_some_and(|b| b & 0x0f == 0x1);
        let sent = if text { &mut metrics.frames_out.text } else { &mut metrics.frames_out.binary };
        *sent += counts.delivered;
        metrics.bytes_out += counts.delivered * (frame.len() - header) as u64;
        counts
    }

    /// Closes the members the last fan-out found to be slow consumers.
    fn close_slow_consumers(&mut self) {
        for key in std::mem::take(&mut self.slow) {
            let Some(connection) = self.connections.get_mut(key) else { continue };
            let mut cx = self.shared.context(self.poll.registry(), self.link.as_ref());
            let step = connection.close_slow_consumer(token::for_connection(key), &mut self.app, &mut cx);
            self.apply(key, step);
        }
    }

    /// This loop's share of a `POST /publish`'s deliveries, to the loop where
    /// it waits.
    fn send_counts(&mut self, reply: Reply, counts: Delivered) {
        match &mut self.link {
            Some(link) if reply.loop_index != link.index => {
                link.outgoing[reply.loop_index].push(Cross::Delivered { to: reply.to, counts });
            }
            _ => self.answer_publish(reply.to, counts),
        }
    }

    /// Hands one loop's delivery counts to the `POST /publish` connection `id`.
    fn answer_publish(&mut self, id: ConnectionId, counts: Delivered) {
        self.answer(id, |connection, cx| connection.on_published(counts, cx));
    }

    /// Hands loop `from`'s figures to the connection `id` answering
    /// `/stats` or `/metrics`.
    fn answer_page(&mut self, id: ConnectionId, from: usize, metrics: &Metrics) {
        self.answer(id, |connection, cx| connection.on_figures(from, metrics, cx));
    }

    /// Runs `on` for the connection `id` waiting for other loops (if it is
    /// still there), and acts on the step it returns.
    fn answer(&mut self, id: ConnectionId, on: impl FnOnce(&mut Connection, &mut Context<'_>) -> Step) {
        let key = id.key();
        let Some(connection) = self.connections.get_mut(key).filter(|c| c.id() == id) else { return };
        let mut cx = self.shared.context(self.poll.registry(), self.link.as_ref());
        let step = on(connection, &mut cx);
        let step = connection.finish(token::for_connection(key), step, &mut cx);
        if step == Step::Remove {
            self.remove(key);
        }
    }

    /// Acts on what other loops (and the bridge) posted to this one.
    pub(super) fn take_inbox(&mut self) {
        let Some(link) = &mut self.link else { return };
        let mut incoming = std::mem::take(&mut link.incoming);
        link.hub.take(link.index, &mut incoming);
        for message in incoming.drain(..) {
            match message {
                Cross::Sequence { room, kind, frame, reply, from_redis } => {
                    self.sequence(room, kind, frame, reply, from_redis);
                }
                Cross::Deliver { room, frame, reply } => {
                    let counts = self.deliver_here(&Target::Named(room), &frame);
                    if let Some(reply) = reply {
                        self.send_counts(reply, counts);
                    }
                }
                Cross::Delivered { to, counts } => self.answer_publish(to, counts),
                Cross::FromRedis { room, kind, payload } => {
                    let frame = self.shared.lent.metrics.fanout.frame(kind, &payload);
                    self.sequence(room, kind, frame, None, true);
                }
                Cross::AskFigures { reply } => {
                    if let Some(link) = &mut self.link {
                        let (from, metrics) = (link.index, Box::new(self.shared.lent.metrics.clone()));
                        link.outgoing[reply.loop_index].push(Cross::Figures { to: reply.to, from, metrics });
                    }
                }
                Cross::Figures { to, from, metrics } => self.answer_page(to, from, &metrics),
            }
        }
        if let Some(link) = &mut self.link {
            link.incoming = incoming;
        }
        self.close_slow_consumers();
    }

    /// End of an iteration: posts what this loop has for the others, tells
    /// the bridge which rooms came and went.
    pub(super) fn post_outgoing(&mut self) {
        let Some(link) = &mut self.link else { return };
        for (to, messages) in link.outgoing.iter_mut().enumerate() {
            link.hub.post(to, messages);
        }
        self.shared.lent.rooms.take_changes(&mut link.changes);
        if let Some(bridge) = link.hub.bridge() {
            for (room, created) in link.changes.drain(..) {
                if created {
                    bridge.join(&room);
                } else {
                    bridge.leave(&room);
                }
            }
        }
        link.changes.clear();
    }

    /// Writes what was delivered to room members in this iteration.
    pub(super) fn drain(&mut self) {
        while !self.dirty.is_empty() {
            for key in std::mem::take(&mut self.dirty) {
                let Some(connection) = self.connections.get_mut(key) else { continue };
                let mut cx = self.shared.context(self.poll.registry(), self.link.as_ref());
                let step = connection.drain(token::for_connection(key), &mut cx);
                self.apply(key, step);
            }
        }
    }
}
