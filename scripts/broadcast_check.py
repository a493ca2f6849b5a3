"""Functional check of a WebSocket broadcast (rooms) server: a broadcast peer,
or wsloop --mode broadcast.

Usage: python broadcast_check.py HOST:PORT   (run with the project's venv: scripts/pyenv.sh)

The semantics checked: a connection joins the room named by its request path
(the query string is not part of the name), and every text or binary message
a member sends reaches every member of that room, the sender included, with
its type, exactly once, and in one order for all of them. Checks, with three
clients in room /a (one of them as /a?query) and one in /b:
  - messages of 0 to 65536 bytes, text and binary, from one member reach all
    three members of /a unchanged, in order, exactly once; never /b, and /b's
    own messages never reach /a;
  - two members sending at once: every member gets every message once, each
    sender's in its send order, and all three in the same order;
  - a fourth member of /a that reads nothing and then closes its socket
    abruptly (a TCP reset, no close frame) while messages flow: the other
    three still get every message;
  - close gets a close back with the same code.
After each step a sentinel from a member proves that nothing else came
(no duplicate, nothing late from the other room). Every step stays well
under 1 MiB per member, so a server that skips messages for a member over
1 MiB of pending output (the minimal peer) never needs to.
Prints one line per check and exits non-zero on the first failure.
"""

import asyncio
import base64
import os
import socket
import struct
import sys

from websockets.asyncio.client import connect

TIMEOUT = 10


def text_of(n: int, salt: int = 0) -> str:
    return "".join(chr(ord("a") + (i + salt) % 26) for i in range(n))


async def join(addr: str, path: str):
    return await connect(f"ws://{addr}{path}", compression=None, max_size=None, proxy=None, ping_interval=None)


async def receive(ws, n: int, who: str) -> list:
    got = []
    for _ in range(n):
        try:
            got.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
        except asyncio.TimeoutError:
            raise AssertionError(f"{who}: got {len(got)} of {n} messages, then nothing for {TIMEOUT} s") from None
    return got


def describe(message) -> str:
    kind = "text" if isinstance(message, str) else "binary"
    return f"{kind} {len(message)} ({message[:24]!r})"


def expect_same(got: list, want: list, who: str, what: str) -> None:
    assert len(got) == len(want), f"{who}, {what}: {len(got)} messages, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert type(g) is type(w) and g == w, f"{who}, {what}: message {i} is {describe(g)}, expected {describe(w)}"


async def sentinel(members: dict, sender: str, label: str) -> None:
    """`sender` sends a unique message; every member's next message must be it."""
    mark = f"sentinel {label} {os.urandom(4).hex()}"
    await members[sender].send(mark)
    for name, ws in members.items():
        (got,) = await receive(ws, 1, name)
        assert got == mark, f"{name}: after {label}, got {describe(got)} where the sentinel should be"


async def checks(addr: str) -> None:
    a = {"a1": await join(addr, "/a"), "a2": await join(addr, "/a?x=1&y=2"), "a3": await join(addr, "/a")}
    b = {"b1": await join(addr, "/b")}

    # One publisher: sizes on both sides of the frame-length encodings, both types.
    sent = []
    for i, n in enumerate([0, 1, 125, 126, 127, 1000, 65535, 65536, 3000, 7]):
        sent.append(os.urandom(n) if i % 2 else text_of(n, i))
    sent.append("h\u00e9llo w\u00f6rld \u2713 \U0001f600" * 20)
    for message in sent:
        await a["a1"].send(message)
    got = await asyncio.gather(*(receive(ws, len(sent), name) for name, ws in a.items()))
    for name, messages in zip(a, got):
        expect_same(messages, sent, name, "one publisher")
    await sentinel(a, "a2", "one publisher")
    print(f"  ok {len(sent)} messages from a1 reach a1, a2 (/a?query) and a3 in order, once")

    # A fragmented message arrives whole (or at least as one message) to all.
    await a["a3"].send([b"frag", b"mented ", b"message"])
    for name, ws in a.items():
        (got,) = await receive(ws, 1, name)
        assert got == b"fragmented message", f"{name}: fragmented message came as {describe(got)}"
    print("  ok a fragmented message reaches every member whole")

    # Room isolation, both ways: /b's first message is its own, and /a's next is a sentinel.
    await b["b1"].send("only for /b")
    (got,) = await receive(b["b1"], 1, "b1")
    assert got == "only for /b", f"b1: got {describe(got)} first: a message from /a leaked into /b"
    await sentinel(a, "a1", "room isolation")
    print("  ok nothing from /a reaches /b, and nothing from /b reaches /a")

    # Two publishers at once: same set, each sender's order, one order for all.
    count = 150

    async def publish(name: str) -> None:
        for i in range(count):
            await a[name].send(f"{name} {i} {text_of(i % 200, i)}" if i % 3 else f"{name} {i}".encode())
            if i % 10 == 0:
                await asyncio.sleep(0)

    publishers = [asyncio.create_task(publish(name)) for name in ("a1", "a2")]
    got = await asyncio.gather(*(receive(ws, 2 * count, name) for name, ws in a.items()))
    await asyncio.gather(*publishers)
    for name, messages in zip(a, got):
        for sender in ("a1", "a2"):
            seq = [m for m in messages if (m if isinstance(m, str) else m.decode()).startswith(sender + " ")]
            ids = [int((m if isinstance(m, str) else m.decode()).split()[1]) for m in seq]
            assert ids == list(range(count)), f"{name}: {sender}'s messages came as {ids[:10]}... ({len(ids)})"
        assert messages == got[0], f"{name}'s order differs from a1's"
    await sentinel(a, "a3", "two publishers")
    print(f"  ok two publishers x {count}: every member got all, in each sender's order, in one order")

    # An abrupt leaver: a raw member of /a that reads nothing, then resets its
    # connection while a1 publishes; the others must get everything.
    raw = raw_join(addr, "/a")
    count, size = 300, 2000
    enough = asyncio.Event()

    async def publish_slowly() -> None:
        for i in range(count):
            await a["a1"].send(f"{i:05d} " + text_of(size, i))
            if i % 20 == 0:
                await asyncio.sleep(0.002)

    async def receive_and_signal(ws, name: str) -> list:
        got = []
        for _ in range(count):
            got += await receive(ws, 1, name)
            if len(got) == count // 3:
                enough.set()
        return got

    async def reset_raw() -> None:
        await asyncio.wait_for(enough.wait(), TIMEOUT)
        # SO_LINGER 0: close() sends a RST, not a FIN, and no close frame.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()

    tasks = [asyncio.create_task(publish_slowly()), asyncio.create_task(reset_raw())]
    got = await asyncio.gather(*(receive_and_signal(ws, name) for name, ws in a.items()))
    await asyncio.gather(*tasks)
    want = [f"{i:05d} " + text_of(size, i) for i in range(count)]
    for name, messages in zip(a, got):
        expect_same(messages, want, name, "abrupt leaver")
    await sentinel(a, "a2", "abrupt leaver")
    print(f"  ok a member reset mid-broadcast: the other three got all {count} messages")

    # The server still serves, and the room still works for a newcomer.
    a["a4"] = await join(addr, "/a")
    await sentinel(a, "a4", "newcomer")
    print("  ok a newcomer joins /a after all that and gets the room's messages")

    for name, ws in {**a, **b}.items():
        await asyncio.wait_for(ws.close(1000, "bye"), TIMEOUT)
        received = ws.protocol.close_rcvd
        assert received is not None, f"{name}: no close frame came back"
        assert received.code == 1000, f"{name}: close came back with code {received.code}"
    print("  ok close (1000 came back to each)")


def raw_join(addr: str, path: str) -> socket.socket:
    """A blocking client that completes the handshake and then never reads."""
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: nothing past the response is taken
        assert chunk, "raw client: closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), f"raw client: handshake answered {response[:40]!r}"
    return sock


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        asyncio.run(checks(sys.argv[1]))
    except Exception as e:  # report any failure the same way: one line, exit 1
        print(f"  FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
