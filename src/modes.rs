//! The applications `--mode` chooses between, written against the same
//! [`App`] interface an embedding program uses.

use crate::{
    app::{App, Ctx, Message, Request},
    config::{Config, Mode},
};

/// `--mode echo`: every text or binary message goes back to its sender,
/// same opcode. The reply points at the received bytes: nothing is copied.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl App for Echo {
    #[inline]
    fn on_message(&mut self, cx: &mut Ctx<'_>, message: Message<'_>) {
        cx.send(message.kind(), message.data());
    }
}

/// `--mode broadcast`: a connection joins the room its request path names
/// (`/` is a room, `/chat/lobby` another; the query is not part of the
/// name), and every text or binary message a member sends goes to every
/// member of that room, the sender included, so that all members see the
/// room's messages in one order.
#[derive(Debug, Default, Clone, Copy)]
pub struct Broadcast;

impl App for Broadcast {
    fn on_open(&mut self, cx: &mut Ctx<'_>, request: &Request<'_>) {
        if let Err(refused) = cx.subscribe(request.path) {
            cx.close(1008, refused.as_str());
        }
    }

    #[inline]
    fn on_message(&mut self, cx: &mut Ctx<'_>, message: Message<'_>) {
        if let Some(room) = cx.room(0) {
            cx.publish_to(room, message.kind(), message.data());
        }
    }
}

/// The application of the mode a [`Config`] names, dispatched with a
/// `match` (no virtual call on the per-message path).
#[derive(Debug)]
pub enum Builtin {
    Echo(Echo),
    Broadcast(Broadcast),
}

impl Builtin {
    pub fn for_config(config: &Config) -> Builtin {
        match config.mode {
            Mode::Echo => Builtin::Echo(Echo),
            Mode::Broadcast => Builtin::Broadcast(Broadcast),
        }
    }
}

impl App for Builtin {
    fn on_open(&mut self, cx: &mut Ctx<'_>, request: &Request<'_>) {
        match self {
            Builtin::Echo(app) => app.on_open(cx, request),
            Builtin::Broadcast(app) => app.on_open(cx, request),
        }
    }

    #[inline]
    fn on_message(&mut self, cx: &mut Ctx<'_>, message: Message<'_>) {
        match self {
            Builtin::Echo(app) => app.on_message(cx, message),
            Builtin::Broadcast(app) => app.on_message(cx, message),
        }
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, code: u16) {
        match self {
            Builtin::Echo(app) => app.on_close(cx, code),
            Builtin::Broadcast(app) => app.on_close(cx, code),
        }
    }
}
