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

/// The application of the mode a [`Config`] names, dispatched with a
/// `match` (no virtual call on the per-message path).
#[derive(Debug)]
pub enum Builtin {
    Echo(Echo),
}

impl Builtin {
    pub fn for_config(config: &Config) -> Builtin {
        match config.mode {
            Mode::Echo => Builtin::Echo(Echo),
        }
    }
}

impl App for Builtin {
    fn on_open(&mut self, cx: &mut Ctx<'_>, request: &Request<'_>) {
        match self {
            Builtin::Echo(app) => app.on_open(cx, request),
        }
    }

    #[inline]
    fn on_message(&mut self, cx: &mut Ctx<'_>, message: Message<'_>) {
        match self {
            Builtin::Echo(app) => app.on_message(cx, message),
        }
    }

    fn on_close(&mut self, id: crate::app::ConnectionId, code: u16) {
        match self {
            Builtin::Echo(app) => app.on_close(id, code),
        }
    }
}
