#!/usr/bin/env python3
"""A plain-to-TLS forwarder, for tools that only speak ws:// (the Autobahn
driver): it listens in plain text on 127.0.0.1 (port 0 picks one; the first
line on stdout says which) and opens a TLS connection to TARGET for each
client, verifying the server's certificate against CA, then copies bytes
both ways, half-closes included.

Usage: tls_proxy.py HOST:PORT CA.pem [SERVER_NAME]
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, ssl.SSLError):
        pass


async def main():
    target, ca = sys.argv[1], sys.argv[2]
    host, port = target.rsplit(":", 1)
    name = sys.argv[3] if len(sys.argv) > 3 else host
    context = ssl.create_default_context(cafile=ca)

    async def forward(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(
                host, int(port), ssl=context, server_hostname=name)
        except (OSError, ssl.SSLError) as e:
            print(f"tls_proxy.py: cannot reach {target}: {e}", file=sys.stderr)
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
        for w in (server_writer, client_writer):
            w.close()

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
