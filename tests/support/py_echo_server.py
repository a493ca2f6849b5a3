"""A WebSocket echo server we did not write: Python `websockets` (pinned in
scripts/pyenv.sh), for loadgen's interoperability test.

Listens on 127.0.0.1 on a free port, prints the port on its first line of
stdout, echoes every message with its opcode, and exits when its stdin
closes (so a test that dies does not leave it running).
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main():
    # No size limit and no compression: loadgen checks every byte it sent.
    async with serve(echo, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
