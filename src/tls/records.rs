//! One TLS connection's records, either side, without I/O: ciphertext in,
//! plaintext out; plaintext in, records out. The server's sockets
//! ([`crate::socket`]) and loadgen's `wss://` connections run this same
//! code over rustls' unbuffered API ([`rustls::unbuffered`]), so that the
//! bytes stay where the loop put them:
//!
//! - **Reading**: the records are decrypted in place, in the loop's receive
//!   buffer, where one `recv` left them ([`Records::open`]). rustls'
//!   buffered API copied them first into a buffer of its own per
//!   connection, 4 KiB per call, growing it 4 KiB at a time (zeroed, and
//!   reallocated) and shrinking it once empty: at 16 KiB messages that copy
//!   into memory gone cold since the connection's last message, and the
//!   resizing, were a fifth of the server's CPU time and of loadgen's. Each
//!   record's plaintext is handed over as rustls 0.23 gives it, in a `Vec` of
//!   its own that is freed at once (so the next one reuses warm memory); a
//!   record that has not fully arrived is kept, sized to what arrived, until
//!   the next read.
//! - **Writing**: plaintext is sealed into records in the loop's room for
//!   them (one per loop thread, reused by every connection, so it stays in
//!   cache) and written from there with one `send` ([`Records::send`]),
//!   after what rustls has to say of its own (handshake flights, session
//!   tickets, alerts), in order; only what the socket does not take is kept.
//! - **Idle**, a connection keeps rustls' state and nothing else: no record
//!   buffer (the buffered API kept 4 KiB per connection while idle).

use std::{
    cell::RefCell,
    fmt,
    io::{self, IoSlice},
    ops::DerefMut,
};

use rustls::{
    client::{ClientConnectionData, UnbufferedClientConnection},
    server::{ServerConnectionData, UnbufferedServerConnection},
    unbuffered::{
        ConnectionState, EncodeError, EncryptError, UnbufferedConnectionCommon, UnbufferedStatus, WriteTraffic,
    },
    CommonState,
};

use super::TlsFailure;
use crate::sys::retry_interrupted;

/// rustls' unbuffered connection, of either side: the one call that
/// differs between them.
pub trait Side: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> {
    /// rustls' per-side state.
    type Data;
    /// `process_tls_records`, rustls' one step.
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// One connection's TLS: rustls' state, the end of a record still
/// arriving, and the records the socket has not taken yet.
pub struct Records<C> {
    conn: C,
    /// Ciphertext received but not yet a whole record (or a handshake
    /// message that spans records, which rustls reads where it lies): it
    /// goes in front of the next read's bytes ([`Records::take_unread`]).
    unread: Vec<u8>,
    /// Records for the peer that the socket has not taken, from
    /// `unsent_from` on; freed once all are written.
    unsent: Vec<u8>,
    unsent_from: usize,
    /// The peer's close_notify has arrived: nothing more will be read.
    peer_closed: bool,
}

/// What [`Records::open`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Plaintext bytes handed over.
    pub plaintext: usize,
    /// The peer has ended TLS (close_notify), now or before.
    pub peer_closed: bool,
}

/// Why [`Records::open`] stopped.
#[derive(Debug)]
pub enum TlsEnd<E> {
    /// A TLS error (an alert, a bad record, a bad certificate): the
    /// connection is over; rustls' alert saying why is queued in
    /// [`Records::unsent`].
    Tls(rustls::Error),
    /// What the plaintext's consumer refused.
    Plain(E),
}

/// Seals `plaintext` into records at the start of `sealed`, growing it until
/// rustls has the room it asks for: their length.
fn seal_into<Data>(
    traffic: &mut WriteTraffic<'_, Data>,
    plaintext: &[u8],
    sealed: &mut Vec<u8>,
) -> Result<Option<usize>, rustls::Error> {
    let records = plaintext.len().div_ceil(RECORD_PLAINTEXT_MAX).max(1);
    let mut room = plaintext.len() + records * RECORD_OVERHEAD;
    loop {
        if sealed.len() < room {
            sealed.resize(room, 0);
        }
        match traffic.encrypt(plaintext, sealed) {
            Ok(n) => return Ok(Some(n)),
            Err(EncryptError::InsufficientSize(short)) if short.required_size > sealed.len() => {
                room = short.required_size;
            }
            // The sequence numbers are spent (2^64 records, or the AEAD's
            // limit on TLS 1.2): the connection must end.
            Err(_) => return Err(rustls::Error::EncryptError),
        }
    }
}

/// Per-record overhead allowed for when sealing: a TLS 1.3 record adds 22
/// bytes (header, content type, tag), a TLS 1.2 AES-GCM one 29 (header,
/// explicit nonce, tag); rustls says so if more is needed.
const RECORD_OVERHEAD: usize = 32;

/// The most plaintext one record carries (RFC 8446 5.1).
const RECORD_PLAINTEXT_MAX: usize = 16 << 10;

impl<C: Side> Records<C> {
    pub fn new(conn: C) -> Self {
        Records { conn, unread: Vec::new(), unsent: Vec::new(), unsent_from: 0, peer_closed: false }
    }

    /// rustls' view of the connection (version, suite, resumption, ALPN).
    pub fn state(&self) -> &CommonState {
        &self.conn
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the peer's close_notify has arrived: nothing more is read.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Bytes kept from the last read, which [`Records::take_unread`] puts
    /// in front of the next one's.
    pub fn unread_len(&self) -> usize {
        self.unread.len()
    }

    /// Moves the bytes kept from the last read to the front of `buf`
    /// (which must have room for them): the next read goes after them, and
    /// [`Records::open`] is given both. Returns how many.
    pub fn take_unread(&mut self, buf: &mut [u8]) -> usize {
        let n = self.unread.len();
        buf[..n].copy_from_slice(&self.unread);
        self.unread = Vec::new();
        n
    }

    /// Keeps `bytes` (what [`Records::take_unread`] gave, when the read
    /// after them brought nothing) for the next read again.
    pub fn keep_unread(&mut self, bytes: &[u8]) {
        self.unread.extend_from_slice(bytes);
    }

    /// Decrypts the records in `records` in place and hands each record's
    /// plaintext to `plain`, in order (never more bytes in all than
    /// `records` holds). What rustls has to send meanwhile (its handshake
    /// flights, session tickets, a key update's answer) is queued in
    /// [`Records::unsent`]; an incomplete record at the end is kept for the
    /// next read. Nothing is read after the peer's close_notify.
    pub fn open<E>(
        &mut self,
        records: &mut [u8],
        mut plain: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<Opened, TlsEnd<E>> {
        let (mut at, mut plaintext, mut waiting) = (0, 0, false);
        while !self.peer_closed && !waiting {
            let UnbufferedStatus { mut discard, state } = self.conn.process(&mut records[at..]);
            match state {
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(TlsEnd::Tls)?;
                        discard += record.discard;
                        plaintext += record.payload.len();
                        plain(record.payload).map_err(TlsEnd::Plain)?;
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => queue(&mut self.unsent, |out| data.encode(out)),
                // Queued in `unsent`, which goes out before anything else.
                Ok(ConnectionState::TransmitTlsData(data)) => data.done(),
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => self.peer_closed = true,
                // Nothing more to do before more records arrive (what is left
                // of `records` is the start of one), or we write.
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => waiting = true,
                // Early data is never accepted (rustls' server default), and
                // any state a later rustls adds is not expected here.
                Ok(_) => {
                    return Err(TlsEnd::Tls(rustls::Error::General("unexpected TLS connection state".into())));
                }
                Err(e) => {
                    self.queue_alert(&mut records[at + discard..]);
                    return Err(TlsEnd::Tls(e));
                }
            }
            at += discard;
        }
        if at < records.len() && !self.peer_closed {
            self.unread.extend_from_slice(&records[at..]);
        }
        Ok(Opened { plaintext, peer_closed: self.peer_closed })
    }

    /// After a failure: rustls has queued an alert saying why; this
    /// encodes it into `unsent` (sending it is the caller's choice).
    /// `records` are the bytes rustls has not discarded, as every step must
    /// be given them (see [`Records::seal`]).
    fn queue_alert(&mut self, records: &mut [u8]) {
        // Only while rustls holds something to send: a step beyond would
        // read the failing record again, and fail again.
        while self.conn.wants_write() {
            match self.conn.process(records).state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => queue(&mut self.unsent, |out| data.encode(out)),
                _ => break,
            }
        }
    }

    /// Seals `plaintext` into records at the start of `sealed` (grown as
    /// needed, never shrunk: it is the loop's, and zeroed only as it grows),
    /// after anything rustls had to send of its own (queued in `unsent`):
    /// their length, or `None` while the handshake is not done.
    ///
    /// Every step of rustls is given the bytes kept from the last read,
    /// never an empty buffer: a handshake message that spans records (a
    /// post-handshake KeyUpdate or ticket, cut by the end of a read) is read
    /// where it lies, and rustls remembers how far into those bytes it got.
    fn seal(&mut self, plaintext: &[u8], sealed: &mut Vec<u8>) -> Result<Option<usize>, rustls::Error> {
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process(&mut self.unread);
            let done = match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => Some(seal_into(&mut traffic, plaintext, sealed)),
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    queue(&mut self.unsent, |out| data.encode(out));
                    None
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                // Not possible: `open` takes every whole record there is.
                Ok(ConnectionState::ReadTraffic(_)) => {
                    Some(Err(rustls::Error::General("TLS records left unread while writing".into())))
                }
                Ok(_) => Some(Ok(None)),
                Err(e) => Some(Err(e)),
            };
            self.unread.drain(..discard);
            if let Some(result) = done {
                return result;
            }
        }
    }

    /// Queues our close_notify (once the handshake is done; before, the
    /// connection is simply dropped).
    pub fn close_notify(&mut self) {
        let UnbufferedStatus { discard, state } = self.conn.process(&mut self.unread);
        if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
            queue(&mut self.unsent, |out| traffic.queue_close_notify(out));
        }
        self.unread.drain(..discard);
    }

    /// Records for the peer that the socket has not taken yet (rustls'
    /// handshake flights, tickets, alerts, the rest of a write): they go
    /// before anything sealed after them.
    pub fn unsent(&self) -> &[u8] {
        &self.unsent[self.unsent_from..]
    }

    /// Writes the records waiting ([`Records::unsent`]) with `write` (one
    /// gathered write of the slices it is given, as `writev`): whether all
    /// went out.
    pub fn flush(&mut self, write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>) -> io::Result<bool> {
        if self.unsent().is_empty() {
            return Ok(true);
        }
        self.write(&[], write)
    }

    /// Seals the plaintext in `slices` (`total` bytes in all) into records
    /// and writes them with `write` (one gathered write of the slices it is
    /// given, as `writev`), behind the records already waiting (so that the
    /// tickets that follow a handshake leave with the first answer). The
    /// plaintext goes 32 KiB at a time, sealed in the loop's room
    /// for records; what `write` does not take of a batch is kept, encrypted,
    /// and no more is sealed until it has gone: the rest of the caller's
    /// output waits in its own queue, unencrypted.
    pub fn send(
        &mut self,
        slices: &[IoSlice<'_>],
        total: usize,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<Sent> {
        SEAL_ROOM.with_borrow_mut(|room| {
            let mut sent = Sent { taken: 0, blocked: false };
            while sent.taken < total && !sent.blocked {
                let plain = gather(slices, sent.taken, &mut room.plain);
                let sealed = self.seal(plain, &mut room.sealed).map_err(|e| io::Error::other(TlsFailure(e)))?;
                // None: the handshake is not done, nothing can be sent yet.
                let Some(len) = sealed else { break };
                sent.taken += plain.len();
                sent.blocked = !self.write(&room.sealed[..len], &mut write)?;
            }
            Ok(sent)
        })
    }

    /// One gathered write of the records waiting and then `sealed`; what is
    /// not taken is kept, in order. Whether all went out.
    fn write(&mut self, sealed: &[u8], mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>) -> io::Result<bool> {
        let waiting = &self.unsent[self.unsent_from..];
        let total = waiting.len() + sealed.len();
        let both = [IoSlice::new(waiting), IoSlice::new(sealed)];
        // Only the slices with bytes: one is the usual case, a `send`.
        let slices = match (waiting.is_empty(), sealed.is_empty()) {
            (true, _) => &both[1..],
            (false, true) => &both[..1],
            (false, false) => &both[..],
        };
        let n = match retry_interrupted(|| write(slices)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        let waiting = waiting.len();
        if n < waiting {
            self.unsent_from += n;
            self.unsent.extend_from_slice(sealed);
        } else if n < total {
            self.unsent.clear();
            self.unsent.extend_from_slice(&sealed[n - waiting..]);
            self.unsent_from = 0;
        } else {
            // All out: the memory goes back (an idle connection keeps none).
            self.unsent = Vec::new();
            self.unsent_from = 0;
        }
        Ok(n == total)
    }
}

/// What [`Records::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Plaintext bytes sealed (and written, or kept encrypted).
    pub taken: usize,
    /// The writer took less than it was given: it is full until it says
    /// otherwise (WRITABLE).
    pub blocked: bool,
}

/// Plaintext sealed per write: two full records. What the writer does not
/// take of them is all a connection keeps encrypted.
const SEAL_CHUNK: usize = 32 << 10;

/// The loop's room for sealing records: a loop is one thread and serves one
/// connection at a time, so one room serves all its TLS connections and
/// stays in cache. (A thread-local rather than a field the loop lends
/// through every write: plain connections, the most, have no use for it.)
#[derive(Default)]
struct SealRoom {
    /// Plaintext of several slices, gathered to be sealed together.
    plain: Vec<u8>,
    /// The records sealed, at its start.
    sealed: Vec<u8>,
}

thread_local! {
    static SEAL_ROOM: RefCell<SealRoom> = RefCell::new(SealRoom::default());
}

/// The next plaintext to seal, up to [`SEAL_CHUNK`] bytes from `skip` bytes
/// into `slices`: a part of one slice as it is, or (when a slice ends
/// before the chunk does) several gathered into `gathered`, so that a frame
/// header and its payload go in one record rather than two.
fn gather<'a>(slices: &'a [IoSlice<'_>], mut skip: usize, gathered: &'a mut Vec<u8>) -> &'a [u8] {
    let mut at = 0;
    while at < slices.len() && skip >= slices[at].len() {
        skip -= slices[at].len();
        at += 1;
    }
    let Some(first) = slices.get(at) else { return &[] };
    let first = &first[skip..];
    if first.len() >= SEAL_CHUNK || at + 1 == slices.len() {
        return &first[..first.len().min(SEAL_CHUNK)];
    }
    gathered.clear();
    gathered.extend_from_slice(first);
    for slice in &slices[at + 1..] {
        let room = SEAL_CHUNK - gathered.len();
        if room == 0 {
            break;
        }
        gathered.extend_from_slice(&slice[..slice.len().min(room)]);
    }
    gathered
}

/// Appends what an `encode` call (of a handshake record or an alert)
/// writes to `unsent`, with the room it asks for. These are small
/// (a few KiB at most: a certificate chain), and rare.
fn queue<E>(unsent: &mut Vec<u8>, mut encode: impl FnMut(&mut [u8]) -> Result<usize, E>)
where
    E: Into<Needs>,
{
    let start = unsent.len();
    let mut room = 1024;
    loop {
        unsent.resize(start + room, 0);
        match encode(&mut unsent[start..]).map_err(Into::into) {
            Ok(n) => {
                unsent.truncate(start + n);
                return;
            }
            Err(Needs(Some(needed))) if needed > room => room = needed,
            // Already encoded, or no room asked for beyond what was given:
            // nothing was written.
            Err(Needs(_)) => {
                unsent.truncate(start);
                return;
            }
        }
    }
}

/// How much room an encoding asked for, if that is why it failed.
struct Needs(Option<usize>);

impl From<EncodeError> for Needs {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::InsufficientSize(short) => Needs(Some(short.required_size)),
            _ => Needs(None),
        }
    }
}

impl From<EncryptError> for Needs {
    fn from(e: EncryptError) -> Self {
        match e {
            EncryptError::InsufficientSize(short) => Needs(Some(short.required_size)),
            _ => Needs(None),
        }
    }
}

impl<C> fmt::Debug for Records<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys stay out of any debug output.
        f.debug_struct("Records")
            .field("unread", &self.unread.len())
            .field("unsent", &(self.unsent.len() - self.unsent_from))
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! A client and a server [`Records`] talking through memory: every byte
    //! one side writes is what the other reads, in pieces of any size.
    use super::*;
    use rustls::{
        crypto::aws_lc_rs,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
        ClientConfig, RootCertStore, ServerConfig,
    };
    use std::sync::Arc;

    type Server = Records<UnbufferedServerConnection>;
    type Client = Records<UnbufferedClientConnection>;

    /// A self-signed certificate for `localhost`, and the configurations of
    /// both sides (the client trusts it). `tls12`: both speak TLS 1.2 only.
    fn configs(tls12: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = Arc::new(aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] =
            if tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    fn pair(tls12: bool) -> (Client, Server) {
        let (server, client) = configs(tls12);
        let name = ServerName::try_from("localhost").unwrap();
        (
            Records::new(UnbufferedClientConnection::new(client, name).unwrap()),
            Records::new(UnbufferedServerConnection::new(server).unwrap()),
        )
    }

    /// Everything `from` has to write (as one writer taking all).
    fn drain<C: Side>(from: &mut Records<C>) -> Vec<u8> {
        let mut wire = Vec::new();
        assert!(from
            .flush(|slices| {
                let n: usize = slices.iter().map(|s| s.len()).sum();
                slices.iter().for_each(|s| wire.extend_from_slice(s));
                Ok(n)
            })
            .unwrap());
        wire
    }

    /// `to` reads `wire` in pieces of `piece` bytes, as a socket would hand
    /// them over, after whatever it kept: its plaintext, and what `open`
    /// said last.
    fn deliver<C: Side>(to: &mut Records<C>, wire: &[u8], piece: usize) -> (Vec<u8>, Opened) {
        let mut plain = Vec::new();
        let mut opened = Opened::default();
        let mut buf = vec![0u8; 64 << 10];
        for chunk in wire.chunks(piece.max(1)) {
            let kept = to.take_unread(&mut buf);
            buf[kept..kept + chunk.len()].copy_from_slice(chunk);
            let before = plain.len();
            opened = to
                .open(&mut buf[..kept + chunk.len()], |p| {
                    plain.extend_from_slice(p);
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert!(plain.len() - before <= kept + chunk.len(), "more plaintext than records");
        }
        (plain, opened)
    }

    /// Runs the handshake, each flight delivered in pieces of `piece` bytes.
    fn handshake(client: &mut Client, server: &mut Server, piece: usize) {
        // The client's first step makes its ClientHello.
        client.open(&mut [], |_| Ok::<(), ()>(())).unwrap();
        for _ in 0..10 {
            let to_server = drain(client);
            deliver(server, &to_server, piece);
            let to_client = drain(server);
            deliver(client, &to_client, piece);
            if !client.is_handshaking() && !server.is_handshaking() && server.unsent().is_empty() {
                return;
            }
        }
        panic!("the handshake did not finish");
    }

    /// `from` sends `data` through a writer that takes everything.
    fn send<C: Side>(from: &mut Records<C>, data: &[&[u8]]) -> Vec<u8> {
        let slices: Vec<IoSlice<'_>> = data.iter().map(|d| IoSlice::new(d)).collect();
        let total = data.iter().map(|d| d.len()).sum();
        let mut wire = Vec::new();
        let sent = from
            .send(&slices, total, |slices| {
                let n: usize = slices.iter().map(|s| s.len()).sum();
                slices.iter().for_each(|s| wire.extend_from_slice(s));
                Ok(n)
            })
            .unwrap();
        assert_eq!(sent, Sent { taken: total, blocked: false });
        wire
    }

    #[test]
    fn messages_cross_both_ways_in_any_pieces() {
        for tls12 in [false, true] {
            for piece in [1, 7, 100, 1 << 20] {
                let (mut client, mut server) = pair(tls12);
                handshake(&mut client, &mut server, piece);
                // A frame header and its payload in two slices; 40 KiB spans three records.
                let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
                let wire = send(&mut client, &[b"head", &big]);
                let (plain, opened) = deliver(&mut server, &wire, piece);
                assert_eq!(&plain[..4], b"head");
                assert_eq!(&plain[4..], &big[..]);
                assert!(!opened.peer_closed);
                let wire = send(&mut server, &[b"reply"]);
                assert_eq!(deliver(&mut client, &wire, piece).0, b"reply");
                // Nothing is kept once a record is whole: no buffer while idle.
                assert_eq!(server.unread_len(), 0);
                assert!(server.unread.capacity() == 0 && server.unsent.capacity() == 0);
            }
        }
    }

    #[test]
    fn a_header_and_payload_go_in_one_record() {
        let (mut client, mut server) = pair(false);
        handshake(&mut client, &mut server, 1 << 20);
        // TLS 1.3: 5 header bytes, the content type and a 16-byte tag per record.
        assert_eq!(send(&mut server, &[b"ab", b"cd", b"ef"]).len(), 6 + 22);
        let payload = vec![7u8; 16 << 10];
        assert_eq!(send(&mut server, &[b"hd", &payload]).len(), payload.len() + 2 + 2 * 22);
    }

    #[test]
    fn what_the_writer_does_not_take_goes_first_next_time() {
        let (mut client, mut server) = pair(false);
        handshake(&mut client, &mut server, 1 << 20);
        let data = vec![5u8; 50_000];
        // A writer that takes 1,000 bytes, then nothing.
        let mut wire = Vec::new();
        let room = 1000;
        let sent = server
            .send(&[IoSlice::new(&data)], data.len(), |slices| {
                let mut n = 0;
                for s in slices {
                    let take = s.len().min(room - n);
                    wire.extend_from_slice(&s[..take]);
                    n += take;
                }
                Ok(n)
            })
            .unwrap();
        // One batch was sealed and kept; the rest was not sealed.
        assert_eq!(sent, Sent { taken: SEAL_CHUNK, blocked: true });
        assert!(server.unsent().len() > SEAL_CHUNK - 1000);
        wire.extend(drain(&mut server));
        wire.extend(send(&mut server, &[&data[SEAL_CHUNK..]]));
        assert_eq!(deliver(&mut client, &wire, 1 << 20).0, data);
        assert!(server.unsent().is_empty());
    }

    #[test]
    fn a_key_update_is_answered_and_traffic_goes_on() {
        let (mut client, mut server) = pair(false);
        handshake(&mut client, &mut server, 1 << 20);
        // The client asks for new keys both ways (TLS 1.3 KeyUpdate, update_requested).
        match client.conn.process(&mut []).state {
            Ok(ConnectionState::WriteTraffic(traffic)) => traffic.refresh_traffic_keys().unwrap(),
            other => panic!("not ready to write: {other:?}"),
        }
        let wire = send(&mut client, &[b"under new keys"]);
        let (plain, _) = deliver(&mut server, &wire, 5);
        assert_eq!(plain, b"under new keys");
        // rustls writes the server's answering KeyUpdate right before its
        // next record, in the same write: two records.
        let wire = send(&mut server, &[b"so are mine"]);
        assert!(wire.len() > b"so are mine".len() + 22, "no KeyUpdate before the record");
        assert_eq!(deliver(&mut client, &wire, 5).0, b"so are mine");
        let wire = send(&mut client, &[b"and again"]);
        assert_eq!(deliver(&mut server, &wire, 1 << 20).0, b"and again");
    }

    #[test]
    fn close_notify_ends_reading_on_the_other_side() {
        let (mut client, mut server) = pair(false);
        handshake(&mut client, &mut server, 1 << 20);
        let mut wire = send(&mut client, &[b"last"]);
        client.close_notify();
        wire.extend(drain(&mut client));
        wire.extend(send(&mut client, &[b"after"]));
        let (plain, opened) = deliver(&mut server, &wire, 3);
        assert_eq!(plain, b"last");
        assert!(opened.peer_closed && server.peer_closed());
    }

    #[test]
    fn garbage_is_a_tls_error_with_an_alert_queued() {
        let (mut client, mut server) = pair(false);
        handshake(&mut client, &mut server, 1 << 20);
        let mut wire = send(&mut client, &[b"hello"]);
        // A flipped bit in the ciphertext: the record does not authenticate.
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let result = server.open(&mut wire, |_| Ok::<(), ()>(()));
        assert!(matches!(result, Err(TlsEnd::Tls(rustls::Error::DecryptError))), "{result:?}");
        assert!(!server.unsent().is_empty(), "the alert is queued");
        // Plain text on a TLS port: refused before any handshake.
        let (_, mut fresh) = pair(false);
        let mut http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert!(matches!(fresh.open(&mut http, |_| Ok::<(), ()>(())), Err(TlsEnd::Tls(_))));
    }

    #[test]
    fn a_handshake_message_cut_across_records_and_reads_survives_writes_and_failures() {
        // The ClientHello re-framed into records of 100 bytes, and the first
        // three of them read: rustls has begun joining the message in the
        // bytes kept, and every later step must be given them again. A
        // write (or a close) in that state once stepped rustls with an
        // empty buffer, which it indexes by how far it had got: a panic.
        let (mut client, _) = pair(false);
        client.open(&mut [], |_| Ok::<(), ()>(())).unwrap();
        let hello = drain(&mut client);
        let reframed: Vec<u8> = hello[5..]
            .chunks(100)
            .flat_map(|c| [&[22, 3, 3][..], &(c.len() as u16).to_be_bytes(), c].concat())
            .collect();
        let (_, mut server) = pair(false);
        let (plain, _) = deliver(&mut server, &reframed[..3 * 105 + 20], 1 << 20);
        assert!(plain.is_empty() && server.unread_len() > 0);
        let sent = server.send(&[IoSlice::new(b"too early")], 9, |s| Ok(s.iter().map(|s| s.len()).sum())).unwrap();
        assert_eq!(sent.taken, 0);
        server.close_notify();
        // The rest arrives: the handshake goes on.
        deliver(&mut server, &reframed[3 * 105 + 20..], 1 << 20);
        assert!(!drain(&mut server).is_empty(), "the server answers the ClientHello");
        // A failure in that state (a record of another kind between two
        // pieces of one handshake message): an error, and no panic.
        let (_, mut failing) = pair(false);
        let mut input = reframed[..3 * 105].to_vec();
        input.extend_from_slice(&[23, 3, 3, 0, 2, 0, 0]);
        let mut buf = vec![0u8; 1 << 16];
        let kept = failing.take_unread(&mut buf);
        buf[kept..kept + input.len()].copy_from_slice(&input);
        let failed = failing.open(&mut buf[..kept + input.len()], |_| Ok::<(), ()>(()));
        assert!(matches!(failed, Err(TlsEnd::Tls(_))), "{failed:?}");
    }

    #[test]
    fn nothing_is_sealed_before_the_handshake_ends() {
        let (mut client, _server) = pair(false);
        client.open(&mut [], |_| Ok::<(), ()>(())).unwrap();
        let sent = client.send(&[IoSlice::new(b"early")], 5, |s| Ok(s.iter().map(|s| s.len()).sum())).unwrap();
        assert_eq!(sent.taken, 0);
    }
}
