"""A wss:// server we did not write: Python `websockets` (pinned in
scripts/pyenv.sh) over the standard library's `ssl` (OpenSSL), for
loadgen's TLS tests.

  --cert FILE --key FILE  the server's certificate chain and key (PEM)
  --app echo              echoes every message with its opcode (the default)
  --app broadcast         a connection joins the room named by its request
                          path; every message a member sends goes to every
                          member, the sender included (as wsloop --mode broadcast)
  --max-version 1.2       speak TLS 1.2 at most
  --no-tickets            no session tickets (TLS 1.2 resumes by session ID,
                          from the server's session cache; TLS 1.3 does not resume)

OpenSSL resumes sessions by default: TLS 1.3 sends two tickets after each
handshake, TLS 1.2 gives tickets and keeps a session cache (Python sets the
session ID context a cache needs).

Listens on 127.0.0.1 on a free port, prints the port on its first line of
stdout, and exits when its stdin closes (so a test that dies does not leave
it running). At exit it prints `handshakes N resumed M` on stdout: the
server's own count, from OpenSSL, to check loadgen's against.
"""

import argparse
import asyncio
import logging
import ssl
import sys

from websockets.asyncio.server import broadcast, serve

# Room path -> its members (broadcast).
rooms = {}
# The server's count of TLS handshakes, and of those OpenSSL says were resumed.
handshakes = 0
resumed = 0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--app", choices=("echo", "broadcast"), default="echo")
    parser.add_argument("--max-version", choices=("1.2", "1.3"), default="1.3")
    parser.add_argument("--no-tickets", action="store_true")
    return parser.parse_args()


def tls_context(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.max_version == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if args.no_tickets:
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    context.set_alpn_protocols(["http/1.1"])
    return context


def count_handshake(connection):
    global handshakes, resumed
    ssl_object = connection.transport.get_extra_info("ssl_object")
    if ssl_object is not None:
        handshakes += 1
        resumed += int(ssl_object.session_reused)


def join(connection, request):
    """process_request hook: before the 101, so a client that has its 101
    is a member already."""
    count_handshake(connection)
    connection.room = request.path.split("?", 1)[0]
    rooms.setdefault(connection.room, []).append(connection)
    return None


async def echo(connection):
    async for message in connection:
        await connection.send(message)


async def fan_out(connection):
    try:
        async for message in connection:
            broadcast(rooms.get(connection.room, []), message)
    finally:
        members = rooms.get(connection.room, [])
        if connection in members:
            members.remove(connection)


async def main():
    args = parse_args()
    if args.app == "echo":
        handler, hook = echo, lambda connection, request: count_handshake(connection)
    else:
        handler, hook = fan_out, join
    # Handshakes that fail (a certificate the client refuses) are what some
    # tests ask for: not logged, so that only a real problem shows.
    quiet = logging.getLogger("py_tls_server")
    quiet.setLevel(logging.CRITICAL)
    # No size limit and no compression: loadgen checks every byte it sent.
    async with serve(
        handler,
        "127.0.0.1",
        0,
        ssl=tls_context(args),
        process_request=hook,
        max_size=None,
        compression=None,
        write_limit=64 << 20,
        ping_interval=None,
        logger=quiet,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.to_thread(sys.stdin.read)
    print(f"handshakes {handshakes} resumed {resumed}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
