//! TLS records: arbitrary bytes from the peer, cut into reads of the size
//! the input's first byte chooses, through the record layer the server's
//! sockets and loadgen's connections run (`wsloop::tls::records`), on the
//! server side (the bytes are a client's: a ClientHello and what follows) or
//! the client side (they answer its ClientHello). Each read goes in after
//! what the layer kept from the last one, as the sockets do. Checks, besides
//! "no panic": never more plaintext than records given; what is kept
//! between reads never more than was given, nor more than one handshake
//! message (rustls' limit, 64 KiB) and the records around it; nothing read
//! after the peer's close_notify. Between reads the connection writes (as
//! an echo would) and, at the end, closes: rustls must then be stepped with
//! the bytes kept, where a handshake message may be half read (this target
//! found that stepping it with none panics inside rustls).

#![no_main]

use std::io::IoSlice;

use libfuzzer_sys::fuzz_target;
use wsloop::tls::records::{Records, Side, TlsEnd};
use wsloop_fuzz::tls::{client, plan, server};

/// The most a connection may keep between reads: one handshake message
/// (rustls refuses larger) and the start of the records on either side.
const UNREAD_MAX: usize = (64 << 10) + 2 * (16 << 10) + 1024;

fuzz_target!(|input: &[u8]| {
    let Some(plan) = plan(input) else { return };
    if plan.server_side {
        run(Records::new(server()), plan.bytes, plan.piece);
    } else {
        run(Records::new(client()), plan.bytes, plan.piece);
    }
});

fn run<C: Side>(mut records: Records<C>, bytes: &[u8], piece: usize) {
    let mut buf = vec![0u8; 256 << 10];
    // The first step: a client's ClientHello goes out.
    if records.open(&mut [], |_| Ok::<(), ()>(())).is_err() {
        return;
    }
    let writer = |slices: &[IoSlice<'_>]| Ok(slices.iter().map(|s| s.len()).sum());
    let (mut given, mut plaintext) = (0, 0);
    for chunk in bytes.chunks(piece) {
        let kept = records.take_unread(&mut buf);
        buf[kept..kept + chunk.len()].copy_from_slice(chunk);
        given += chunk.len();
        let opened = records.open(&mut buf[..kept + chunk.len()], |plain| {
            plaintext += plain.len();
            Ok::<(), ()>(())
        });
        assert!(plaintext <= given, "{plaintext} bytes of plaintext from {given} of records");
        let unread = records.unread_len();
        assert!(unread <= given && unread <= UNREAD_MAX, "{unread} bytes kept after {given}");
        match opened {
            Ok(opened) if opened.peer_closed => {
                assert_eq!(unread, 0, "bytes kept after close_notify");
                let after = records.open(&mut buf[..1], |_| Err::<(), ()>(()));
                assert!(matches!(after, Ok(o) if o.plaintext == 0), "read after close_notify");
                return;
            }
            Ok(_) => {}
            Err(TlsEnd::Tls(_)) => return,
            Err(TlsEnd::Plain(())) => unreachable!("the consumer refuses nothing"),
        }
        // A write between reads (nothing is sealed before the handshake
        // ends), then what the layer has to say goes out, as to a socket
        // that takes it all.
        if let Ok(sent) = records.send(&[IoSlice::new(b"reply")], 5, writer) {
            assert!(sent.taken == 0 || sent.taken == 5);
        }
        assert!(records.flush(writer).expect("the writer takes everything"));
    }
    records.close_notify();
}
