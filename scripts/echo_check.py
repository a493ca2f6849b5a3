"""Functional echo check of a WebSocket echo server (a peer, or wsloop itself).

Usage: python echo_check.py HOST:PORT [--ca FILE]   (run with the project's venv: scripts/pyenv.sh)
  --ca FILE: the server speaks TLS (wss://) with a certificate that FILE (PEM)
  signed; every check below then runs over TLS, and so do these:
  - TLS 1.2 and TLS 1.3 each complete a handshake, ALPN http/1.1 is chosen
    when offered, and a WebSocket echo works over each;
  - a plain-text upgrade request on the TLS port gets no HTTP answer (the
    connection ends, or a TLS alert comes back), and the server carries on.

Checks, each on the server at HOST:PORT:
  - text and binary messages of 0, 125, 126, 65536 and 1 MiB bytes come back
    unchanged and with the same type (125/126 and 65535/65536 are the edges of
    the frame-length encodings);
  - multi-byte UTF-8 text, and a fragmented message (each server may echo it
    whole or frame by frame: the client sees one message either way);
  - 100 messages sent before any is read come back in order, and so do
    16 MiB sent while the client reads nothing (the server's writes go short);
  - ping gets a pong with the same payload;
  - close gets a close back with the same code;
  - a raw client that sends the upgrade request in two pieces and a frame one
    byte at a time, so that the request and a frame header straddle reads,
    then writes a whole 16 MiB message before it reads anything.
Prints one line per check and exits non-zero on the first failure.
"""

import asyncio
import base64
import hashlib
import os
import socket
import ssl
import sys
import time

from websockets.asyncio.client import connect

SIZES = [0, 125, 126, 65536, 1 << 20]
TIMEOUT = 10


def text_of(n: int) -> str:
    return "".join(chr(ord("a") + i % 26) for i in range(n))


async def echo_checks(uri: str, tls: ssl.SSLContext | None = None) -> None:
    async with connect(uri, compression=None, max_size=None, proxy=None, ping_interval=None, ssl=tls) as ws:
        for n in SIZES:
            payload = os.urandom(n)
            await ws.send(payload)
            got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert isinstance(got, bytes), f"binary {n}: came back as {type(got).__name__}"
            assert got == payload, f"binary {n}: payload differs (got {len(got)} bytes)"
            print(f"  ok binary {n}")
            text = text_of(n)
            await ws.send(text)
            got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert isinstance(got, str), f"text {n}: came back as {type(got).__name__}"
            assert got == text, f"text {n}: payload differs (got {len(got)} chars)"
            print(f"  ok text {n}")

        utf8 = "h\u00e9llo w\u00f6rld \u2713 \U0001f600" * 100
        await ws.send(utf8)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == utf8, "multi-byte UTF-8 text differs"
        print("  ok multi-byte text")

        await ws.send([b"frag", b"mented ", b"message"])
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"fragmented message", "fragmented message differs"
        print("  ok fragmented message")

        sent = [os.urandom(i * 37 % 3000) for i in range(100)]
        for message in sent:
            await ws.send(message)
        for i, message in enumerate(sent):
            got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert got == message, f"pipelined message {i} differs"
        print("  ok 100 pipelined messages")

        # Back-pressure: 16 MiB sent while nothing is read for a while, so the
        # server's writes go short and it must buffer, wait for WRITABLE, and
        # resume reading; then everything must come back, in order.
        sent = [os.urandom(65536) for _ in range(256)]
        sender = asyncio.create_task(send_all(ws, sent))
        await asyncio.sleep(0.3)
        for i, message in enumerate(sent):
            got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert got == message, f"back-pressure message {i} differs"
        await asyncio.wait_for(sender, TIMEOUT)
        print("  ok 16 MiB sent while not reading (back-pressure)")

        for payload in (b"", b"ping payload"):
            pong = await ws.ping(payload)
            latency = await asyncio.wait_for(pong, TIMEOUT)
            print(f"  ok ping/pong ({len(payload)}-byte payload, {latency * 1e6:.0f} us)")

        await asyncio.wait_for(ws.close(1000, "bye"), TIMEOUT)
        received = ws.protocol.close_rcvd
        assert received is not None, "no close frame came back"
        assert received.code == 1000, f"close came back with code {received.code}"
        print("  ok close (1000 came back)")


async def send_all(ws, messages: list) -> None:
    for message in messages:
        await ws.send(message)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def upgrade_request(host: str, port: int) -> tuple[bytes, str]:
    """An upgrade request for /, and its key."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return request, key


def open_socket(host: str, port: int, tls: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return tls.wrap_socket(sock, server_hostname=host) if tls else sock


def raw_check(host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    """Request in two pieces, a 200-byte frame one byte at a time, then 16 MiB at once."""
    request, key = upgrade_request(host, port)
    with open_socket(host, port, tls) as sock:
        sock.sendall(request[:20])
        time.sleep(0.05)
        sock.sendall(request[20:])
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            response += chunk
        head, rest = response.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), f"handshake answered {head[:40]!r}"
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
        headers = {name.strip().lower(): value.strip() for name, value in headers.items()}
        assert headers.get(b"sec-websocket-accept") == accept, f"accept key {headers.get(b'sec-websocket-accept')!r}"
        assert rest == b"", "bytes after the 101 before any frame was sent"

        payload = os.urandom(200)
        mask = os.urandom(4)
        frame = bytes([0x82, 0x80 | 126]) + (200).to_bytes(2, "big") + mask
        frame += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        for b in frame:
            sock.sendall(bytes([b]))
            time.sleep(0.001)
        head = recv_exactly(sock, 4)
        assert head == bytes([0x82, 126]) + (200).to_bytes(2, "big"), f"echoed header {head!r}"
        assert recv_exactly(sock, 200) == payload, "echoed payload differs"
        print("  ok handshake and frame straddling reads")

        # A blocking client that writes a whole 16 MiB message before it reads
        # anything: a server that echoes as it reads must keep reading while
        # its own output waits, or both sides block. (Mask key 0: the payload
        # goes over the wire as is, which keeps this fast in Python.)
        payload = os.urandom(16 << 20)
        sock.sendall(bytes([0x82, 0x80 | 127]) + len(payload).to_bytes(8, "big") + bytes(4) + payload)
        head = recv_exactly(sock, 10)
        assert head == bytes([0x82, 127]) + len(payload).to_bytes(8, "big"), f"echoed header {head!r}"
        assert recv_exactly(sock, len(payload)) == payload, "echoed 16 MiB payload differs"
    print("  ok 16 MiB written whole before reading")


def small_echo(sock: socket.socket, host: str, port: int) -> None:
    """Upgrade on `sock`, then one masked binary frame must come back."""
    request, _ = upgrade_request(host, port)
    sock.sendall(request)
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        assert chunk, "connection closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), f"handshake answered {response[:40]!r}"
    payload, mask = os.urandom(100), os.urandom(4)
    sock.sendall(bytes([0x82, 0x80 | 100]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    assert recv_exactly(sock, 2) == bytes([0x82, 100]), "echoed header differs"
    assert recv_exactly(sock, 100) == payload, "echoed payload differs"


def tls_checks(host: str, port: int, ca: str) -> None:
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        context = ssl.create_default_context(cafile=ca)
        context.minimum_version = context.maximum_version = version
        context.set_alpn_protocols(["http/1.1"])
        with open_socket(host, port, context) as sock:
            assert sock.version() == name, f"asked for {name}, got {sock.version()}"
            alpn = sock.selected_alpn_protocol()
            assert alpn == "http/1.1", f"ALPN chose {alpn!r}, not http/1.1"
            cipher = sock.cipher()[0]
            small_echo(sock, host, port)
        print(f"  ok {name} handshake ({cipher}), ALPN http/1.1, echo over it")

    request, _ = upgrade_request(host, port)
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        answer = b""
        while len(answer) < 5:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        assert not answer.startswith(b"HTTP"), f"a plain-text request on the TLS port got {answer[:40]!r}"
    with open_socket(host, port, ssl.create_default_context(cafile=ca)) as sock:
        small_echo(sock, host, port)
    what = "a TLS alert" if answer[:1] == b"\x15" else f"{len(answer)} bytes and the end"
    print(f"  ok plain text on the TLS port: {what}, and the next TLS client is served")


def main() -> int:
    args = sys.argv[1:]
    ca = None
    if len(args) == 3 and args[1] == "--ca":
        ca = args[2]
        args = args[:1]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    addr = args[0]
    host, port = addr.rsplit(":", 1)
    tls = ssl.create_default_context(cafile=ca) if ca else None
    try:
        if ca:
            tls_checks(host, int(port), ca)
        asyncio.run(echo_checks(f"{'wss' if ca else 'ws'}://{addr}/", tls))
        raw_check(host, int(port), tls)
    except Exception as e:  # report any failure the same way: one line, exit 1
        print(f"  FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
