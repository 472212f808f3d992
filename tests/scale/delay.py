"""A TCP relay that holds every chunk going one way for a fixed time: 20 ms between an ingress host and
Redis where the kernel has no netem qdisc (`tc qdisc add ... netem` answers "Specified qdisc kind is
unknown" on this machine). Run on the ingress host; the ingress's REDIS_URL names the relay.

    python -m tests.scale.delay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT SECONDS
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy in order, each chunk written `delay` seconds after it was read (a queue, not a sleep per
    chunk, so that chunks in flight overlap as packets on a slow link do)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def later() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sending = asyncio.create_task(later())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    queue.put_nowait((loop.time(), b""))
    with contextlib.suppress(OSError):
        await sending


async def main(listen: str, port: int, target: str, target_port: int, delay: float) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, delay), pump(server_reader, client_writer, 0.0)
        )
        for w in (client_writer, server_writer):
            w.close()

    server = await asyncio.start_server(relay, listen, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    host, port, target, target_port, seconds = sys.argv[1:6]
    asyncio.run(main(host, int(port), target, int(target_port), float(seconds)))
