"""Frames sent in one event-loop iteration leave in one socket write, in order."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from usepod_desktop.core.link import _BatchingConnection


async def test_frames_of_one_iteration_share_a_write_and_keep_their_order() -> None:
    received: list[str] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(str(message))
            if len(received) == 300:
                done.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}", create_connection=_BatchingConnection, compression=None
        ) as ws:
            writes: list[int] = []
            real_write = ws.transport.write

            def counting_write(data: bytes) -> None:
                writes.append(len(data))
                real_write(data)

            ws.transport.write = counting_write  # type: ignore[method-assign]
            for burst in range(3):  # three iterations' worth of frames
                await asyncio.gather(*(ws.send(f"{burst}:{i}") for i in range(100)))
                await asyncio.sleep(0)
            async with asyncio.timeout(10):
                await done.wait()
    assert received == [f"{b}:{i}" for b in range(3) for i in range(100)]
    assert 3 <= len(writes) <= 6  # ~one write per burst, not one per frame
