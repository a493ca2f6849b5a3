"""A broadcast server we did not write, on Python `websockets` (pinned in
scripts/pyenv.sh), for loadgen's broadcast-mode tests: a stand-in for
`wsloop --mode broadcast` with the same rules, and faults on request.

A connection joins the room named by its request path (the query string is
not part of the name); every text or binary message a member sends goes to
every member of the room, the sender included, opcode kept, in one order.

Listens on 127.0.0.1 on a free port, prints the port on its first line of
stdout, and exits when its stdin closes (so a test that dies does not leave
it running).

Faults, each on the Nth message the server receives (counted from 1, over
all rooms), each done to one member of the sender's room that is not the
sender (the last to join; the sender itself if it is alone):

  --drop N       not delivered to that member
  --duplicate N  delivered to it twice
  --reorder N    delivered to it after the sender's next message
  --leak N       delivered as well to a member of another room

And the two slow-consumer policies, for a member whose output backlog (what
the kernel has not taken) is over --slow-limit bytes:

  --slow-policy drop   messages for it are skipped
  --slow-policy close  it is closed with 1008
"""

import argparse
import asyncio
import sys

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

# Room path -> its members, in the order they joined.
rooms = {}
# Messages received so far (all rooms).
received = 0
# Reorder: (member, sender, message) held until the sender's next message.
held = None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for fault in ("drop", "duplicate", "reorder", "leak"):
        parser.add_argument(f"--{fault}", type=int, default=0, metavar="N")
    parser.add_argument("--slow-limit", type=int, default=0, metavar="BYTES")
    parser.add_argument("--slow-policy", choices=("drop", "close"), default="drop")
    return parser.parse_args()


def room_of(request):
    return request.path.split("?", 1)[0]


def join(connection, request):
    """process_request hook: runs before the 101 is sent, so a client that
    has its 101 is a member already (loadgen publishes only after every
    connection has its 101)."""
    room = room_of(request)
    connection.room = room
    rooms.setdefault(room, []).append(connection)
    return None


def target_in(members, sender):
    others = [m for m in members if m is not sender]
    return others[-1] if others else sender


def deliver(member, message, args):
    """One delivery, under the slow-consumer policy."""
    if args.slow_limit and member.transport.get_write_buffer_size() > args.slow_limit:
        if args.slow_policy == "close" and member.protocol.state is State.OPEN:
            asyncio.ensure_future(member.close(1008, "too slow"))
        return
    broadcast([member], message)


def fan_out(sender, message, args):
    global received, held
    received += 1
    n = received
    members = rooms.get(sender.room, [])
    target = target_in(members, sender)
    release = None
    if held is not None and held[1] is sender:
        release, held = held, None
    for member in list(members):
        if member is target:
            if n == args.drop:
                continue
            if n == args.reorder:
                held = (member, sender, message)
                continue
        deliver(member, message, args)
        if member is target and n == args.duplicate:
            deliver(member, message, args)
        if release is not None and member is release[0]:
            deliver(member, release[2], args)
    if n == args.leak:
        for room, others in rooms.items():
            if room != sender.room and others:
                deliver(others[0], message, args)
                break


async def main():
    args = parse_args()

    async def handler(connection):
        try:
            async for message in connection:
                fan_out(connection, message, args)
        except ConnectionClosed:
            pass  # closed without a close handshake, or by --slow-policy close
        finally:
            members = rooms.get(connection.room, [])
            if connection in members:
                members.remove(connection)

    # No size limit and no compression: loadgen checks every byte it sent.
    # Large write limits: only --slow-limit decides who is slow.
    async with serve(
        handler,
        "127.0.0.1",
        0,
        process_request=join,
        max_size=None,
        compression=None,
        write_limit=64 << 20,
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
