//! A chat room server on wsloop, written as a user would: nicknames, rooms,
//! `/join ROOM` and `/nick NAME`. Every open browser tab is a connection on
//! one thread; a line a member sends goes to everyone in its room.
//!
//! ```sh
//! cargo run --release --example chat -- --listen 127.0.0.1:9002
//! # then, in two terminals (or browser tabs):
//! websocat 'ws://127.0.0.1:9002/lobby?nick=ada'
//! websocat 'ws://127.0.0.1:9002/lobby?nick=bob'
//! ```

use std::collections::HashMap;

use clap::Parser;
use wsloop::{
    app::{App, ConnectionId, Ctx, Message, Request},
    Config, Server,
};

/// Who is who, and where: the only state a chat needs.
#[derive(Default)]
pub struct Chat {
    people: HashMap<ConnectionId, Person>,
}

struct Person {
    nick: String,
    room: String,
}

impl App for Chat {
    fn on_open(&mut self, cx: &mut Ctx<'_>, request: &Request<'_>) {
        let nick = request.query.and_then(|q| q.strip_prefix("nick=")).unwrap_or("guest");
        let nick = format!("{nick}#{}", cx.id().get() >> 32);
        let room = if request.path == "/" { "/lobby" } else { request.path };
        self.enter(cx, nick, room.to_string());
    }

    fn on_message(&mut self, cx: &mut Ctx<'_>, message: Message<'_>) {
        let Some(text) = message.text() else { return cx.send_text("* text only, please") };
        let Some(me) = self.people.get_mut(&cx.id()) else { return };
        if let Some(room) = text.strip_prefix("/join ") {
            let (nick, old) = (me.nick.clone(), me.room.clone());
            cx.publish_text(&old, &format!("* {nick} left for {room}"));
            cx.unsubscribe(&old);
            self.enter(cx, nick, format!("/{}", room.trim_start_matches('/')));
        } else if let Some(nick) = text.strip_prefix("/nick ") {
            let line = format!("* {} is now {nick}", me.nick);
            me.nick = nick.to_string();
            let room = me.room.clone();
            cx.publish_text(&room, &line);
        } else {
            let line = format!("{}: {text}", me.nick);
            let room = me.room.clone();
            cx.publish_text(&room, &line);
        }
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, _code: u16) {
        if let Some(me) = self.people.remove(&cx.id()) {
            cx.publish_text(&me.room, &format!("* {} left", me.nick));
        }
    }
}

impl Chat {
    fn enter(&mut self, cx: &mut Ctx<'_>, nick: String, room: String) {
        if let Err(refused) = cx.subscribe(&room) {
            return cx.close(1008, refused.as_str());
        }
        cx.send_text(&format!("* you are {nick}, in {room}; /join ROOM, /nick NAME"));
        cx.publish_text(&room, &format!("* {nick} joined"));
        self.people.insert(cx.id(), Person { nick, room });
    }
}

/// The chat's command line: every wsloop flag (`--listen`, limits, ...).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[allow(dead_code)] // the tests include this file for `Chat` alone
fn main() -> std::io::Result<()> {
    let mut server = Server::bind_with(Cli::parse().config, Chat::default())?;
    server.handle_signals()?;
    eprintln!("chat listening on ws://{}/", server.local_addr());
    server.run().map(|_| ())
}
