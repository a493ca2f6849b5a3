//! The chat in `examples/chat.rs`, an application written against wsloop's
//! public interface, run in-process: nicknames, rooms, `/join`, `/nick`,
//! farewells.

#[path = "../examples/chat.rs"]
mod chat;
mod support;

use support::*;
use tungstenite::Message;
use wsloop::Config;

fn line(ws: &mut Client) -> String {
    match next_message(ws) {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text line, got {other:?}"),
    }
}

#[test]
fn two_tabs_talk_through_the_chat() {
    let server = TestServer::start_app(Config::default(), chat::Chat::default());
    let mut ada = connect_to(server.addr, "/lobby?nick=ada");
    assert!(line(&mut ada).starts_with("* you are ada#1, in /lobby"));
    assert_eq!(line(&mut ada), "* ada#1 joined");
    let mut bob = connect_to(server.addr, "/lobby?nick=bob");
    assert!(line(&mut bob).starts_with("* you are bob#2"));
    assert_eq!(line(&mut bob), "* bob#2 joined");
    assert_eq!(line(&mut ada), "* bob#2 joined");

    ada.send(Message::text("hello bob")).unwrap();
    assert_eq!(line(&mut ada), "ada#1: hello bob");
    assert_eq!(line(&mut bob), "ada#1: hello bob");

    bob.send(Message::text("/nick robert")).unwrap();
    assert_eq!(line(&mut ada), "* bob#2 is now robert");
    assert_eq!(line(&mut bob), "* bob#2 is now robert");

    // Bob moves to another room: Ada hears he left, and no longer hears him.
    bob.send(Message::text("/join kitchen")).unwrap();
    assert_eq!(line(&mut ada), "* robert left for kitchen");
    assert!(line(&mut bob).starts_with("* you are robert, in /kitchen"));
    assert_eq!(line(&mut bob), "* robert joined");
    bob.send(Message::text("anyone?")).unwrap();
    assert_eq!(line(&mut bob), "robert: anyone?");
    ada.send(Message::text("still here")).unwrap();
    assert_eq!(line(&mut ada), "ada#1: still here");

    // Closing says goodbye to the room.
    let mut cara = connect_to(server.addr, "/kitchen?nick=cara");
    assert!(line(&mut cara).starts_with("* you are cara"));
    assert_eq!(line(&mut cara), "* cara#3 joined");
    assert_eq!(line(&mut bob), "* cara#3 joined");
    cara.close(None).unwrap();
    assert_eq!(line(&mut bob), "* cara#3 left");
    // Binary is refused politely.
    bob.send(Message::binary(vec![1])).unwrap();
    assert_eq!(line(&mut bob), "* text only, please");
}
