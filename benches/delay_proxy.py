"""A TCP relay that holds every chunk for a fixed delay in each direction, keeping order:
a round trip of twice the delay, as between two hosts of a network, on one machine without
`tc netem`. Used to measure what round trips cost PostgreSQL writes (BENCHMARKS.md).

    python3 benches/delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_SECONDS

Listens on 127.0.0.1:LISTEN_PORT and relays each connection to 127.0.0.1:TARGET_PORT (TLS
passes through untouched). It runs until killed. Being Python, it adds some CPU time of its
own, so compare rates measured through it with each other, not with direct ones.
"""

from __future__ import annotations

import asyncio
import sys
import time

CHUNK = 65536


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copies `reader` to `writer`, each chunk `delay` seconds after it arrived."""
    held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await held.get()
            if not data:
                writer.close()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    while True:
        data = await reader.read(CHUNK)
        held.put_nowait((time.monotonic() + delay, data))
        if not data:
            break
    await delivering


async def serve(listen: int, target: int, delay: float) -> None:
    async def connect(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            relay(client_r, server_w, delay),
            relay(server_r, client_w, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(connect, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))


if __name__ == "__main__":
    main()
